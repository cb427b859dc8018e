"""A channel that comes back after a reconnect, with what was declared on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec

from .abc import AbstractRobustChannel, ExchangeType, TimeoutType
from .channel import Channel
from .exceptions import AMQPError
from .queue import Queue
from .robust_exchange import RobustExchange
from .robust_queue import RobustQueue
from .tools import CallbackCollection

if TYPE_CHECKING:
    from .robust_connection import RobustConnection

log = logging.getLogger("amqpfast.robust")

__all__ = ["RobustChannel"]

Arguments = dict[str, Any] | None


class RobustChannel(Channel, AbstractRobustChannel):
    """A :class:`Channel` of a :class:`RobustConnection`.

    It records its QoS, the exchanges and queues declared with ``robust=True``
    (the default), their bindings and consumers, and restores them after a
    reconnect. A channel the broker closes for an error is opened again. Only
    :meth:`close` ends it for good.
    """

    QUEUE_CLASS = RobustQueue
    EXCHANGE_CLASS = RobustExchange
    _connection: RobustConnection
    # seconds before a channel the broker closed is opened again
    REOPEN_PAUSE = 1.0

    def __init__(self, connection: RobustConnection, *args: Any, **kwargs: Any) -> None:
        super().__init__(connection, *args, **kwargs)
        self._qos: dict[str, Any] | None = None
        self._exchanges: dict[str, RobustExchange] = {}
        self._queues: list[RobustQueue] = []
        self._close_called = False
        self._restored = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # reopens, consumers coming back
        # seconds a publish waits for a reconnect to finish; None: it fails at once
        self.recovery_wait: float | None = None
        self.reopen_callbacks = CallbackCollection(self)

    @property
    def _gone(self) -> bool:
        # closed for good: only close() or the connection's close do that
        return self._close_called or self._closed.done()

    async def ready(self, timeout: TimeoutType = None) -> None:
        """Wait until the channel is open and, after a reconnect, restored.

        :raises TimeoutError: not ready within ``timeout`` seconds.
        """
        await asyncio.wait_for(self._restored.wait(), timeout)

    async def initialize(self, timeout: TimeoutType = None) -> None:
        """Open the channel (what ``await channel`` does)."""
        await super().initialize(timeout)
        self._restored.set()

    async def _open(self, timeout: TimeoutType = None) -> None:
        await super()._open(timeout)
        # a consumer the broker cancels (its queue deleted) comes back later
        self.channel_or_raise().on_cancel_callbacks.append(self._on_broker_cancel)

    def _on_broker_cancel(self, consumer_tag: str) -> None:
        for queue in self._queues:
            if consumer_tag in queue._consumers:
                log.warning(
                    "the broker cancelled consumer %r of queue %r: it comes back when the "
                    "queue exists again",
                    consumer_tag,
                    queue.name,
                )
                self._start(self._consume_again(queue, consumer_tag))

    async def _consume_again(self, queue: RobustQueue, consumer_tag: str) -> None:
        # The queue is probed on a channel of its own: a 404 there must not
        # close this channel and disturb its other consumers.
        connection = self._connection
        while consumer_tag in queue._consumers and not self._gone:
            await asyncio.sleep(connection.reconnect_interval)
            if self.is_closed or not connection.connected.is_set():
                continue  # a reconnect restores it with the rest
            try:
                probe = await connection.transport.channel(publisher_confirms=False)
                try:
                    await probe.queue_declare(queue.name, passive=True)
                finally:
                    if not probe.is_closed:
                        await probe.close()
                if consumer_tag in self.channel_or_raise().consumers:
                    return  # a reconnect's restore started it already
                callback, options = queue._consumers[consumer_tag]
                await Queue.consume(queue, callback, consumer_tag=consumer_tag, **options)
            except AMQPError as error:
                log.debug("queue %r not back yet: %s", queue.name, error)
                continue
            log.info("consumer %r of queue %r is back", consumer_tag, queue.name)
            return

    def _on_low_level_closed(self, closing: asyncio.Future[None]) -> None:
        self._restored.clear()
        error = None if closing.cancelled() else closing.exception()
        connection = self._connection
        if self._close_called or connection.close_called:
            self._set_closed(error)
        elif not connection.transport.is_closed and not connection.reconnecting:
            # the broker closed this channel (an error): open it again soon
            log.warning("channel %s closed by the broker (%s): reopening", self, error)
            self._start(self._reopen_after_error())
        # else the connection is down or being restored: that restores this channel

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stop_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _reopen_after_error(self) -> None:
        await asyncio.sleep(self.REOPEN_PAUSE)
        connection = self._connection
        if self._gone or not self.is_closed or connection.reconnecting:
            return  # closed for good, open again already, or the reconnect's business
        if not connection.connected.is_set():
            return
        try:
            await self._open()
            await self.restore_topology()
            await self.restore_consumers()
        except Exception as error:  # the connection supervisor tries again later
            log.warning("reopening channel %s failed: %s", self, error)
        else:
            self._restored.set()
            self.reopen_callbacks()

    def _on_connection_lost(self) -> None:
        # the restore after the reconnect does what these tasks were waiting to do
        self._stop_tasks()
        for queue in self._queues:
            queue._on_connection_lost()

    async def restore_channel(self) -> None:
        """Open a new channel with the same settings and QoS (restore, step 1)."""
        await self._open()
        if self._qos is not None:
            await self.channel_or_raise().basic_qos(**self._qos)

    async def restore_exchanges(self) -> None:
        """Declare the recorded exchanges (step 2)."""
        for exchange in tuple(self._exchanges.values()):
            await exchange.restore_declaration()

    async def restore_exchange_bindings(self) -> None:
        """Bind the exchanges to their sources (step 3)."""
        for exchange in tuple(self._exchanges.values()):
            await exchange.restore_bindings()

    async def restore_queues(self) -> None:
        """Declare the recorded queues (step 4)."""
        for queue in tuple(self._queues):
            await queue.restore_declaration()

    async def restore_queue_bindings(self) -> None:
        """Bind the queues (step 5)."""
        for queue in tuple(self._queues):
            await queue.restore_bindings()

    async def restore_consumers(self) -> None:
        """Start the consumers again (step 6); then the channel is ready."""
        for queue in tuple(self._queues):
            await queue.restore_consumers()
        self._restored.set()

    async def restore_topology(self) -> None:
        """Steps 2 to 5 for this channel alone."""
        await self.restore_exchanges()
        await self.restore_exchange_bindings()
        await self.restore_queues()
        await self.restore_queue_bindings()

    async def close(self, exc: BaseException | None = None) -> None:
        """Close the channel for good."""
        self._close_called = True
        self._stop_tasks()
        if self._channel is None or self._channel.is_closed:
            self._set_closed(exc)
            return
        await super().close(exc)

    async def set_qos(
        self,
        prefetch_count: int = 0,
        prefetch_size: int = 0,
        global_: bool = False,
        timeout: TimeoutType = None,
        all_channels: bool | None = None,
    ) -> spec.Basic.QosOk:
        """Set QoS; it is set again after a reconnect."""
        if all_channels is not None:
            global_ = all_channels
        result = await super().set_qos(prefetch_count, prefetch_size, global_, timeout)
        self._qos = {
            "prefetch_count": prefetch_count,
            "prefetch_size": prefetch_size,
            "global_": global_,
        }
        return result

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
        robust: bool = True,
    ) -> RobustExchange:
        """Declare an exchange; ``robust``: declare it again after a reconnect."""
        if passive and name in self._exchanges:
            return self._exchanges[name]
        exchange = await super().declare_exchange(
            name,
            type,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            passive=passive,
            arguments=arguments,
            timeout=timeout,
        )
        assert isinstance(exchange, RobustExchange)
        if robust and name:
            self._exchanges[name] = exchange
        return exchange

    async def exchange_delete(
        self,
        exchange_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        nowait: bool = False,
    ) -> spec.Exchange.DeleteOk | None:
        """Delete an exchange; it is not declared again after a reconnect."""
        result = await super().exchange_delete(exchange_name, timeout, if_unused, nowait)
        self._exchanges.pop(exchange_name, None)
        return result

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
        robust: bool = True,
    ) -> RobustQueue:
        """Declare a queue; ``robust``: declare, bind and consume it again after a reconnect."""
        if passive and name:
            for known in self._queues:
                if known.name == name:
                    return known
        queue = await super().declare_queue(
            name,
            durable=durable,
            exclusive=exclusive,
            passive=passive,
            auto_delete=auto_delete,
            arguments=arguments,
            timeout=timeout,
        )
        assert isinstance(queue, RobustQueue)
        if robust:
            self._queues.append(queue)
        return queue

    async def queue_delete(
        self,
        queue_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> spec.Queue.DeleteOk | None:
        """Delete a queue; it is not declared again after a reconnect."""
        result = await super().queue_delete(queue_name, timeout, if_unused, if_empty, nowait)
        self._queues = [queue for queue in self._queues if queue.name != queue_name]
        return result

    def _forget_exchange(self, exchange: RobustExchange) -> None:
        if self._exchanges.get(exchange.name) is exchange:
            del self._exchanges[exchange.name]

    def _forget_queue(self, queue: RobustQueue) -> None:
        self._queues = [known for known in self._queues if known is not queue]
