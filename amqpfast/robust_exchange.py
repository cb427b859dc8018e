"""An exchange that is declared again, with its bindings, after a reconnect."""

from __future__ import annotations

from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec

from ._marks import coroutine_function
from .abc import (
    AbstractMessage,
    AbstractRobustExchange,
    ExchangeParamType,
    ExchangeType,
    TimeoutType,
    get_exchange_name,
)
from .exchange import Exchange
from .tools import _warn_channel_argument

if TYPE_CHECKING:
    from .channel import Channel
    from .robust_channel import RobustChannel

__all__ = ["RobustExchange"]

Arguments = dict[str, Any] | None


class RobustExchange(Exchange, AbstractRobustExchange):
    """An :class:`Exchange` that remembers its exchange-to-exchange bindings.

    During a reconnect :meth:`declare`, :meth:`bind`, :meth:`unbind` and
    :meth:`delete` wait for the restore of the channel, within their
    ``timeout``; :meth:`publish` does not (see ``recovery_wait``).
    """

    channel: RobustChannel

    def __init__(
        self,
        channel: Channel,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        auto_delete: bool = False,
        durable: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: Arguments = None,
    ) -> None:
        super().__init__(
            channel,
            name,
            type,
            auto_delete=auto_delete,
            durable=durable,
            internal=internal,
            passive=passive,
            arguments=arguments,
        )
        # (source exchange name, routing key) -> arguments
        self._bindings: dict[tuple[str, str], Arguments] = {}

    async def declare(self, timeout: TimeoutType = None) -> spec.Exchange.DeclareOk:
        """Declare the exchange on the broker; waits for a restore first."""
        timeout = await self.channel._wait_ready(timeout)
        return await super().declare(timeout)

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> spec.Exchange.BindOk:
        """Bind to a source exchange; ``robust``: bind again after a reconnect."""
        timeout = await self.channel._wait_ready(timeout)
        result = await super().bind(exchange, routing_key, arguments=arguments, timeout=timeout)
        if robust:
            self._bindings[(get_exchange_name(exchange), routing_key)] = arguments
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Exchange.UnbindOk:
        """Remove a binding, for good."""
        timeout = await self.channel._wait_ready(timeout)
        result = await super().unbind(exchange, routing_key, arguments, timeout)
        self._bindings.pop((get_exchange_name(exchange), routing_key), None)
        return result

    @coroutine_function
    def publish(
        self,
        message: AbstractMessage,
        routing_key: str,
        *,
        mandatory: bool = True,
        immediate: bool = False,
        timeout: TimeoutType = None,
    ) -> Coroutine[Any, Any, Any]:
        """Publish; during a reconnect wait up to the channel's ``recovery_wait`` seconds.

        With ``recovery_wait`` None (the default) a publish during an outage
        raises :class:`~amqpfast.exceptions.ChannelInvalidStateError` (at
        the await, as every error of :meth:`Exchange.publish`).
        """
        if self._in_recovery():
            return self._publish_when_recovered(message, routing_key, mandatory, immediate, timeout)
        return super().publish(
            message, routing_key, mandatory=mandatory, immediate=immediate, timeout=timeout
        )

    async def _publish_when_recovered(
        self,
        message: AbstractMessage,
        routing_key: str,
        mandatory: bool,
        immediate: bool,
        timeout: TimeoutType,
    ) -> Any:
        await self._recovered()
        return await super().publish(
            message, routing_key, mandatory=mandatory, immediate=immediate, timeout=timeout
        )

    def _in_recovery(self) -> bool:
        # a reconnect is on and the channel waits for it (recovery_wait set)
        channel = self.channel
        return (
            getattr(channel, "recovery_wait", None) is not None
            and channel.is_closed
            and not channel._gone
        )

    async def _recovered(self) -> None:
        # during a reconnect: wait up to the channel's recovery_wait, if set
        if self._in_recovery():
            await self.channel.ready(self.channel.recovery_wait)

    async def publish_many(
        self,
        messages: Iterable[AbstractMessage],
        routing_key: str,
        *,
        mandatory: bool = True,
        immediate: bool = False,
        timeout: TimeoutType = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Publish a batch (see :meth:`Exchange.publish_many`); during a
        reconnect wait as :meth:`publish` does."""
        await self._recovered()
        return await super().publish_many(
            messages,
            routing_key,
            mandatory=mandatory,
            immediate=immediate,
            timeout=timeout,
            return_exceptions=return_exceptions,
        )

    async def delete(
        self, if_unused: bool = False, timeout: TimeoutType = None
    ) -> spec.Exchange.DeleteOk:
        """Delete the exchange; it is not declared again after a reconnect."""
        timeout = await self.channel._wait_ready(timeout)
        result = await super().delete(if_unused, timeout)
        self.channel._forget_exchange(self)
        return result

    async def restore(self, channel: Any = None) -> None:
        """Declare the exchange again and bind it to its sources (on the current channel).

        :param channel: ignored (deprecated).
        """
        _warn_channel_argument(channel)
        if not self.name:
            return  # the default exchange is always there
        await self.restore_declaration()
        await self.restore_bindings()

    async def restore_declaration(self) -> None:
        """Declare the exchange again (first step of a restore)."""
        # the base class's call: the restore is what the robust ones wait for
        await Exchange.declare(self)

    async def restore_bindings(self) -> None:
        """Bind again to the source exchanges (after every exchange is declared)."""
        for (source, routing_key), arguments in tuple(self._bindings.items()):
            await super().bind(source, routing_key, arguments=arguments)
