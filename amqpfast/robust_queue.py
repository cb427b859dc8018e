"""A queue that is declared, bound and consumed again after a reconnect."""

from __future__ import annotations

import weakref
from typing import Any

from pamqp import commands as spec

from .abc import AbstractRobustQueue, ConsumerTag, ExchangeParamType, TimeoutType, get_exchange_name
from .queue import Callback, Queue, QueueIterator

__all__ = ["RobustQueue", "RobustQueueIterator"]

Arguments = dict[str, Any] | None


class RobustQueue(Queue, AbstractRobustQueue):
    """A :class:`Queue` that remembers its bindings and consumers.

    A server-named queue gets a new name from the broker on restore; its
    bindings and consumers follow the new name.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._server_named = not self.name
        # (exchange name, routing key or None: the queue's name, whatever
        # it is after a restore) -> arguments
        self._bindings: dict[tuple[str, str | None], Arguments] = {}
        # consumer tag -> (callback, consume keyword arguments)
        self._consumers: dict[ConsumerTag, tuple[Callback, dict[str, Any]]] = {}
        self._iterators: weakref.WeakSet[RobustQueueIterator] = weakref.WeakSet()

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> spec.Queue.BindOk:
        """Bind to an exchange; ``robust``: bind again after a reconnect."""
        result = await super().bind(exchange, routing_key, arguments=arguments, timeout=timeout)
        if robust:
            self._bindings[(get_exchange_name(exchange), routing_key)] = arguments
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Queue.UnbindOk:
        """Remove a binding, for good."""
        result = await super().unbind(exchange, routing_key, arguments, timeout)
        name = get_exchange_name(exchange)
        self._bindings.pop((name, routing_key), None)
        if routing_key in (None, self.name):  # either spelling of the default key
            self._bindings.pop((name, None), None)
            self._bindings.pop((name, self.name), None)
        return result

    async def consume(
        self,
        callback: Callback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> ConsumerTag:
        """Start a consumer; ``robust``: start it again (same tag) after a reconnect."""
        tag = await super().consume(
            callback,
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        if robust:
            options = {"no_ack": no_ack, "exclusive": exclusive, "arguments": arguments}
            self._consumers[tag] = (callback, options)
        return tag

    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> spec.Basic.CancelOk | None:
        """Stop a consumer, for good."""
        self._consumers.pop(consumer_tag, None)
        return await super().cancel(consumer_tag, timeout=timeout, nowait=nowait)

    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> spec.Queue.DeleteOk:
        """Delete the queue; it is not declared again after a reconnect."""
        result = await super().delete(if_unused=if_unused, if_empty=if_empty, timeout=timeout)
        self._consumers.clear()
        self.channel._forget_queue(self)  # type: ignore[attr-defined]
        return result

    def iterator(self, **kwargs: Any) -> RobustQueueIterator:
        """The messages as an async iterator that goes on after a reconnect."""
        iterator = RobustQueueIterator(self, **kwargs)
        self._iterators.add(iterator)
        return iterator

    def _on_connection_lost(self) -> None:
        for iterator in list(self._iterators):
            iterator._drop_buffered()

    async def restore_declaration(self) -> None:
        """Declare again: a server-named queue asks for a new name."""
        if self._server_named:
            self.name = ""
        await self.declare()

    async def restore_bindings(self) -> None:
        """Bind again (after every exchange is declared)."""
        for (exchange, routing_key), arguments in tuple(self._bindings.items()):
            await Queue.bind(self, exchange, routing_key, arguments=arguments)

    async def restore_consumers(self) -> None:
        """Start the consumers again, with their tags, callbacks and options."""
        for tag, (callback, options) in tuple(self._consumers.items()):
            await Queue.consume(self, callback, consumer_tag=tag, **options)


class RobustQueueIterator(QueueIterator):
    """A :class:`QueueIterator` that waits through a reconnect instead of ending."""

    def _drop_buffered(self) -> None:
        # Fetched on the old connection: they cannot be acked any more and
        # the broker delivers them again.
        self._buffer.clear()
