"""Exchanges: publish messages, bind exchanges to exchanges."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, cast

from pamqp import commands as spec

from ._marks import coroutine_function
from .abc import (
    AbstractExchange,
    AbstractMessage,
    ExchangeParamType,
    ExchangeType,
    TimeoutType,
    get_exchange_name,
)
from .core._drive import DONE
from .message import Message

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger("amqpfast.exchange")

__all__ = ["Exchange", "ExchangeType"]

Arguments = dict[str, Any] | None


class Exchange(AbstractExchange):
    """An exchange on a channel (made by :meth:`Channel.declare_exchange`)."""

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
        self._type = type.value if isinstance(type, ExchangeType) else type
        self.channel = channel
        self.name = name
        self.auto_delete = auto_delete
        self.durable = durable
        self.internal = internal
        self.passive = passive
        self.arguments = arguments or {}

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}({self}): auto_delete={self.auto_delete}, "
            f"durable={self.durable}, arguments={self.arguments!r})>"
        )

    async def declare(self, timeout: TimeoutType = None) -> spec.Exchange.DeclareOk:
        """Declare the exchange on the broker."""
        channel = await self.channel.get_underlay_channel()
        return await channel.exchange_declare(
            self.name,
            exchange_type=self._type,
            durable=self.durable,
            auto_delete=self.auto_delete,
            internal=self.internal,
            passive=self.passive,
            arguments=self.arguments,
            timeout=timeout,
        )

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Exchange.BindOk:
        """Route messages of ``exchange`` (the source) to this exchange."""
        channel = await self.channel.get_underlay_channel()
        return await channel.exchange_bind(  # type: ignore[return-value]
            destination=self.name,
            source=get_exchange_name(exchange),
            routing_key=routing_key,
            arguments=arguments,
            timeout=timeout,
        )

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Exchange.UnbindOk:
        """Remove a binding made by :meth:`bind`."""
        channel = await self.channel.get_underlay_channel()
        return await channel.exchange_unbind(  # type: ignore[return-value]
            destination=self.name,
            source=get_exchange_name(exchange),
            routing_key=routing_key,
            arguments=arguments,
            timeout=timeout,
        )

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
        """Publish a message through this exchange; await what it returns.

        With publisher confirms (the channel's default) the awaitable gives
        the broker's Basic.Ack (pamqp's class, as aio-pika does); a
        mandatory message the broker cannot route comes back as the result (a low-level
        :class:`~amqpfast.core.DeliveredMessage`), or raises
        :class:`~amqpfast.exceptions.PublishError` when the channel was
        opened with ``on_return_raises``. Without confirms it gives None.
        A message without a ``message_id`` goes out with a random UUID4
        (hex) as its message_id, as with aio-pika (through aiormq).

        The message is queued for the socket by the call itself; the
        awaitable (a Future on a confirm channel) waits for the confirm, so
        ``asyncio.gather`` over many publishes needs no Task per message.
        Errors are raised by the await, as from aio-pika's coroutine, and
        ``asyncio.create_task`` takes the awaitable as it takes a coroutine.

        ``timeout`` covers the whole publish: the wait while the socket
        drains, the broker blocks the connection (a resource alarm) or has
        flow off on the channel, and the confirm; after a timeout the
        channel stays usable.

        :raises DeliveryError: the broker answered Basic.Nack.
        :raises ChannelInvalidStateError: the channel is closed.
        :raises TimeoutError: not sent and confirmed within ``timeout``.
        """
        try:
            if self.internal:
                raise ValueError(f"can not publish to internal exchange {self.name!r}")
            # channel_or_raise(), inline: this is the path of every message
            underlay = self.channel._channel
            if underlay is None or (channel := underlay.channel)._closed:
                channel = self.channel.channel_or_raise()  # raises: not opened, or closed
            sent = channel.publish(
                message.body,
                self.name,
                routing_key,
                # a plain Message is encoded from its own fields
                message if type(message) is Message else message.properties,
                mandatory,
                immediate,
                timeout,
            )
        except Exception as error:
            return _raise(error)  # at the await, as from a coroutine
        if sent is None:
            return SENT
        # a Confirmation (it has a coroutine's methods), or a coroutine that waits to send
        return sent  # type: ignore[return-value]

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
        """Publish messages in order, then wait for their confirms together.

        The same as ``asyncio.gather(*(exchange.publish(m, routing_key) for m
        in messages))``, without a coroutine and a Task per message: every
        message is published as :meth:`publish` would, and the list holds,
        in the order of ``messages``, what each publish would return (the
        broker's Basic.Ack, the returned message, or None without confirms).

        Each message stands alone, as under ``gather``: one that fails (a
        Basic.Nack, a return on an ``on_return_raises`` channel, a value that
        cannot be encoded, the channel's close) does not stop the others.
        With ``return_exceptions`` its error takes its place in the list;
        without, the first error is raised once every message has its
        answer. ``timeout`` covers the whole batch: on TimeoutError (or a
        cancel) the confirms still due are abandoned, the channel stays
        usable.

        :raises ValueError: the exchange is internal.
        :raises ChannelInvalidStateError: the channel is closed before the first message.
        :raises TimeoutError: not all sent and confirmed within ``timeout``.
        """
        if self.internal:
            raise ValueError(f"can not publish to internal exchange {self.name!r}")
        channel = self.channel.channel_or_raise()
        name = self.name
        sent: list[asyncio.Future[Any] | None] = []
        try:
            async with asyncio.timeout(timeout):
                for message in messages:
                    try:
                        answer = channel.publish(
                            message.body,
                            name,
                            routing_key,
                            message if type(message) is Message else message.properties,
                            mandatory,
                            immediate,
                        )
                        if answer is not None and not isinstance(answer, asyncio.Future):
                            # it had to wait (a drain, Blocked, Flow): sent and answered now
                            answer = _settled(channel.loop, result=await answer)
                    except Exception as error:
                        answer = _settled(channel.loop, error=error)
                    sent.append(answer)
                return await _answers(sent, return_exceptions)
        except BaseException as error:
            for answer in sent:
                if answer is not None and not answer.done():
                    answer.cancel()  # abandoned: a confirm that comes later finds nothing
            if isinstance(error, asyncio.CancelledError):
                raise channel.close_error(error) from error
            raise

    async def delete(
        self, if_unused: bool = False, timeout: TimeoutType = None
    ) -> spec.Exchange.DeleteOk:
        """Delete the exchange."""
        log.info("deleting %r", self)
        channel = await self.channel.get_underlay_channel()
        return await channel.exchange_delete(  # type: ignore[return-value]
            self.name, if_unused=if_unused, timeout=timeout
        )


def _settled(
    loop: asyncio.AbstractEventLoop, result: Any = None, error: Exception | None = None
) -> asyncio.Future[Any]:
    # the answer of a publish of a batch that is known already
    future = loop.create_future()
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
    return future


async def _answers(sent: list[asyncio.Future[Any] | None], return_exceptions: bool) -> list[Any]:
    # each publish's result or error, in order; confirms still due are awaited
    # one by one (most have come by the time the first of them is in)
    results: list[Any] = []
    first_error: Exception | None = None
    for answer in sent:
        if answer is None:
            results.append(None)
            continue
        try:
            # most are in by the time the first is: no await for those
            results.append(answer.result() if answer.done() else await answer)
        except Exception as error:
            results.append(error)
            if first_error is None:
                first_error = error
    if first_error is not None and not return_exceptions:
        raise first_error
    return results


async def _raise(error: Exception) -> Any:
    raise error


# What a publish without confirms returns: done at once (awaiting it runs in
# C), and a coroutine to asyncio.create_task; typed as what it stands in for
SENT = cast(Coroutine[Any, Any, None], DONE)
