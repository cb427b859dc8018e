"""The high-level channel: exchanges, queues, QoS, transactions, callbacks."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, Literal

from pamqp import commands as spec
from pamqp.constants import REPLY_SUCCESS

from .abc import AbstractChannel, ExchangeType, TimeoutType, UnderlayChannel
from .core import Channel as LowLevelChannel
from .core import DeliveredMessage
from .exceptions import ChannelClosed, ChannelInvalidStateError
from .exchange import Exchange
from .message import ReturnedMessage
from .queue import Queue
from .tools import CallbackCollection
from .transaction import Transaction

if TYPE_CHECKING:
    from .connection import Connection

log = logging.getLogger("amqpfast.channel")

__all__ = ["Channel"]

Arguments = dict[str, Any] | None


class Channel(AbstractChannel):
    """A channel of a :class:`~amqpfast.Connection`.

    ``await connection.channel()`` or ``async with connection.channel() as
    channel`` opens it.

    :param publisher_confirms: each publish waits for the broker's confirm.
    :param on_return_raises: a returned mandatory message fails its publish
        with :class:`~amqpfast.exceptions.PublishError` (needs confirms).
    """

    QUEUE_CLASS = Queue
    EXCHANGE_CLASS = Exchange
    default_exchange: Exchange

    def __init__(
        self,
        connection: Connection,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> None:
        if on_return_raises and not publisher_confirms:
            raise RuntimeError('"on_return_raises" needs "publisher_confirms"')
        self._connection = connection
        self._channel_number = channel_number
        self._channel: UnderlayChannel | None = None
        self._closed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.publisher_confirms = publisher_confirms
        self.on_return_raises = on_return_raises
        self.close_callbacks: CallbackCollection[Any, ...] = CallbackCollection(self)
        self.return_callbacks: CallbackCollection[Any, ...] = CallbackCollection(self)
        self.default_exchange = self.EXCHANGE_CLASS(self, "", ExchangeType.DIRECT)

    def __str__(self) -> str:
        return str(self.number or "Not initialized channel")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self} of {self._connection!r}>"

    # ------------------------------------------------------------ state

    @property
    def connection(self) -> Connection:
        """The connection the channel belongs to."""
        return self._connection

    @property
    def is_initialized(self) -> bool:
        """The channel was opened."""
        return self._channel is not None

    @property
    def is_closed(self) -> bool:
        """Not open: never opened, closed by us, the broker or the connection."""
        underlay = self._channel
        return underlay is None or self._closed.done() or underlay.channel.is_closed

    @property
    def _gone(self) -> bool:
        # closed for good (a robust channel comes back after a reconnect)
        return self.is_closed

    @property
    def number(self) -> int | None:
        """The channel number."""
        underlay = self._channel
        return self._channel_number if underlay is None else underlay.channel.number

    def closed(self) -> Awaitable[Literal[True]]:
        """An awaitable that finishes (True) when the channel is closed.

        Cancelling it (or a timeout around it) does not touch the channel.
        """
        return asyncio.shield(self._closed)  # type: ignore[arg-type]

    def channel_or_raise(self) -> LowLevelChannel:
        """The low-level channel, or ChannelInvalidStateError if it is closed."""
        underlay = self._channel
        if underlay is None:
            raise ChannelInvalidStateError(f"{self!r} was not opened")
        channel = underlay.channel
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{self!r} is closed")
        return channel

    async def get_underlay_channel(self) -> LowLevelChannel:
        """The low-level channel (:class:`amqpfast.core.Channel`) under this one."""
        return self.channel_or_raise()

    @property
    def channel(self) -> LowLevelChannel:
        """The low-level channel (deprecated, as in aio-pika: use :meth:`get_underlay_channel`)."""
        warnings.warn(
            "Channel.channel is deprecated: await channel.get_underlay_channel()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.channel_or_raise()

    # ------------------------------------------------------------ opening, closing

    async def _open(self, timeout: TimeoutType = None) -> None:
        transport = self._connection.transport
        if transport is None:
            raise ChannelInvalidStateError("No active transport in channel")
        underlay = await UnderlayChannel.create(
            transport.connection,
            self._on_close,
            channel_number=self._channel_number,
            publisher_confirms=self.publisher_confirms,
            on_return_raises=self.on_return_raises,
            timeout=timeout,
        )
        self._channel = underlay
        underlay.channel.on_return_callbacks.append(self._on_return)
        if self._closed.done():
            self._closed = asyncio.get_running_loop().create_future()

    async def initialize(self, timeout: TimeoutType = None) -> None:
        """Open the channel (what ``await channel`` does)."""
        if self.is_initialized:
            raise RuntimeError("Already initialized")
        if self._closed.done():
            raise RuntimeError("Can't initialize closed channel")
        await self._open(timeout)

    async def reopen(self) -> None:
        """Open a closed channel again (a new low-level channel)."""
        await self._open()

    async def _on_close(self, closing: asyncio.Future[None]) -> BaseException | None:
        # the low-level channel closed (once per opening): by us, the broker
        # or the connection
        error = self._close_reason(closing)
        self._set_closed(error)
        return error

    @staticmethod
    def _close_reason(closing: asyncio.Future[None]) -> BaseException:
        # what close callbacks hear; a normal close is a ChannelClosed too (as in aiormq)
        if closing.cancelled():
            return asyncio.CancelledError()
        return closing.exception() or ChannelClosed(REPLY_SUCCESS, "Normal shutdown")

    def _set_closed(self, error: BaseException | None) -> None:
        # once per opening, whether the broker, the connection or close() ended it
        if self._closed.done():
            return
        self._closed.set_result(True)
        self.close_callbacks(error)

    def _on_return(self, message: DeliveredMessage) -> None:
        self.return_callbacks(ReturnedMessage(message, no_ack=True))

    async def close(self, exc: BaseException | None = None) -> None:
        """Close the channel."""
        underlay = self._channel
        if underlay is None:
            log.warning("channel %r was never opened", self)
            return
        await underlay.close(exc)
        if not self._closed.done():
            self._closed.set_result(True)

    def __await__(self) -> Generator[Any, None, Channel]:
        return self._opened().__await__()

    async def _opened(self) -> Channel:
        if not self.is_initialized:
            await self.initialize()
        return self

    async def __aenter__(self) -> Channel:
        return await self._opened()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    # ------------------------------------------------------------ exchanges

    async def declare_exchange(
        self,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> Exchange:
        """Declare an exchange and return it.

        :raises ChannelNotFoundEntity: ``passive`` and the exchange does not exist.
        :raises ChannelPreconditionFailed: it exists with other parameters.
        """
        exchange = self.EXCHANGE_CLASS(
            self,
            name,
            type,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            passive=passive,
            arguments=arguments,
        )
        await exchange.declare(timeout=timeout)
        return exchange

    async def get_exchange(self, name: str, *, ensure: bool = True) -> Exchange:
        """An existing exchange: checked with a passive declare when ``ensure``."""
        if ensure:
            return await self.declare_exchange(name, passive=True)
        return self.EXCHANGE_CLASS(self, name, passive=True)

    async def exchange_delete(
        self,
        exchange_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        nowait: bool = False,
    ) -> spec.Exchange.DeleteOk | None:
        """Delete an exchange by name."""
        channel = self.channel_or_raise()
        return await channel.exchange_delete(
            exchange_name, if_unused=if_unused, nowait=nowait, timeout=timeout
        )

    # ------------------------------------------------------------ queues

    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool = False,
        exclusive: bool = False,
        passive: bool = False,
        auto_delete: bool = False,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> Queue:
        """Declare a queue and return it; without a name the broker chooses one."""
        queue = self.QUEUE_CLASS(
            self,
            name,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
            passive=passive,
        )
        await queue.declare(timeout=timeout)
        return queue

    async def get_queue(self, name: str, *, ensure: bool = True) -> Queue:
        """An existing queue: checked with a passive declare when ``ensure``."""
        if ensure:
            return await self.declare_queue(name, passive=True)
        return self.QUEUE_CLASS(self, name, False, False, False, None, passive=True)

    async def queue_delete(
        self,
        queue_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> spec.Queue.DeleteOk | None:
        """Delete a queue by name."""
        channel = self.channel_or_raise()
        return await channel.queue_delete(
            queue_name, if_unused=if_unused, if_empty=if_empty, nowait=nowait, timeout=timeout
        )

    # ------------------------------------------------------------ the rest

    async def set_qos(
        self,
        prefetch_count: int = 0,
        prefetch_size: int = 0,
        global_: bool = False,
        timeout: TimeoutType = None,
        all_channels: bool | None = None,
    ) -> spec.Basic.QosOk:
        """Limit unacknowledged deliveries per consumer (or per channel with ``global_``)."""
        if all_channels is not None:
            warnings.warn(
                'Use "global_" instead of "all_channels"', DeprecationWarning, stacklevel=2
            )
            global_ = all_channels
        channel = self.channel_or_raise()
        return await channel.basic_qos(
            prefetch_count=prefetch_count,
            prefetch_size=prefetch_size,
            global_=global_,
            timeout=timeout,
        )

    def transaction(self) -> Transaction:
        """A transaction: ``async with channel.transaction(): ...`` commits or rolls back.

        :raises RuntimeError: the channel uses publisher confirms.
        """
        if self.publisher_confirms:
            raise RuntimeError("Cannot create transaction when publisher confirms are enabled")
        return Transaction(self)

    async def flow(self, active: bool = True) -> spec.Channel.FlowOk:
        """Ask the broker to pause (False) or resume (True) deliveries."""
        return await self.channel_or_raise().flow(active)
