"""A channel that comes back after a reconnect, with what was declared on it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec

from .abc import AbstractRobustChannel, ExchangeType, TimeoutType
from .channel import Channel
from .core import Channel as LowLevelChannel
from .exceptions import AMQPConnectionError, AMQPError
from .queue import Queue
from .robust_exchange import RobustExchange
from .robust_queue import RobustQueue
from .tools import CallbackCollection, _warn_channel_argument

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
    # seconds before a channel the broker closed is opened again (None: the
    # connection's CHANNEL_REOPEN_PAUSE)
    REOPEN_PAUSE: float | None = None
    # seconds between attempts to reopen it while the broker refuses
    RESTORE_RETRY_DELAY: float = 2

    def __init__(
        self,
        connection: RobustConnection,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> None:
        super().__init__(connection, channel_number, publisher_confirms, on_return_raises)
        self._qos: dict[str, Any] | None = None
        self._exchanges: dict[str, RobustExchange] = {}
        # queue name -> the robust queues of that name (one, unless declared
        # again with robust=True), as in aio-pika
        self._queues: dict[str, list[RobustQueue]] = {}
        self._close_called = False
        self.__restored = asyncio.Event()  # open, and restored after a reconnect
        self.__restore_lock = asyncio.Lock()  # one restore at a time
        self.__reopening = False  # reopening after the broker closed it
        self.__awaiting_reconnect = False  # lost with its connection, not restored yet
        # seconds a publish waits for a reconnect to finish; None: it fails at once
        self.recovery_wait: float | None = None
        self.reopen_callbacks: CallbackCollection[Any, ...] = CallbackCollection(self)

    @property
    def _gone(self) -> bool:
        # closed for good: only close() or the connection's close do that
        return self._close_called or self._closed.done()

    def _all_queues(self) -> tuple[RobustQueue, ...]:
        return tuple(queue for queues in self._queues.values() for queue in queues)

    def _ready_now(self) -> bool:
        return self.__restored.is_set() and not self.is_closed

    def _never_back(self) -> bool:
        # nothing to wait for: never opened, or closed for good (close(), or
        # its connection's); the call that follows raises ChannelInvalidStateError
        connection = self._connection
        return (
            self._channel is None or self._gone or connection.close_called or connection.is_closed
        )

    async def ready(self, timeout: TimeoutType = None) -> None:
        """Wait until the channel is open and, after a reconnect, restored.

        As in aio-pika, a channel closed for good is never ready.

        :raises TimeoutError: not ready within ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                await self.__restored.wait()
                if self._gone or not self.is_closed:
                    return
                # closed a moment ago: its close handler (a task) is about
                # to clear __restored and reopen it
                await asyncio.sleep(0)

    async def _wait_ready(self, timeout: TimeoutType) -> TimeoutType:
        """Wait for a restore under way, for a call given ``timeout``; return what is left.

        What waits for a restore (declare, delete, bind, consume ...) calls
        this first; a publish does not (see ``recovery_wait``). It returns
        at once when there is nothing to wait for: the channel is ready,
        closed for good, or closed by the broker a moment ago with its
        connection up (the call raises ChannelInvalidStateError, as in
        aio-pika, until the channel's reopen begins).

        :raises TimeoutError: not ready within ``timeout``, or none left for the call.
        """
        if self._ready_now():
            return timeout
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        async with asyncio.timeout_at(deadline):
            while not self._ready_now() and not self._never_back():
                if self.__restored.is_set():
                    if not self._connection._transport_lost():
                        return timeout
                    # lost with its connection a moment ago: the close
                    # handler (a task) is about to clear __restored
                    await asyncio.sleep(0)
                    continue
                restored = asyncio.ensure_future(self.__restored.wait())
                try:
                    # a close for good (the channel's or the connection's) ends the wait too
                    await asyncio.wait(
                        (restored, self._closed, self._connection._closed),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    restored.cancel()
        if deadline is None:
            return None
        left = deadline - loop.time()
        if left <= 0:
            # sent with no time left, the call would time out and close the channel
            raise TimeoutError
        return left

    async def initialize(self, timeout: TimeoutType = None) -> None:
        """Open the channel (what ``await channel`` does)."""
        await super().initialize(timeout)
        self.__restored.set()

    async def _open(self, timeout: TimeoutType = None) -> None:
        await super()._open(timeout)
        # a consumer the broker cancels (its queue deleted, a consumer
        # timeout) comes back: aiormq's hook, on every low-level channel
        self.channel_or_raise().on_consumer_cancel_callbacks.add(self._on_consumer_cancel)

    def _on_consumer_cancel(self, frame: spec.Basic.Cancel) -> None:
        tag = frame.consumer_tag
        for queue in self._all_queues():
            if tag in queue._consumers:
                log.warning(
                    "the broker cancelled consumer %r of queue %r: it comes back when the "
                    "queue exists again",
                    tag,
                    queue.name,
                )
                self._connection._request_recovery()
                return

    async def _restore_consumers(self) -> bool:
        """Start again the consumers the broker cancelled (the connection's supervisor calls it).

        Each queue that lost consumers is first probed (:meth:`RobustQueue._probe`)
        on a channel of its own, so that a 404 does not close this channel
        and stop its other consumers.

        :returns: True when something failed and a later pass should try again.
        """
        if self._gone or self.__reopening:
            return False  # closed for good, or its reopen restores every consumer
        try:
            await self.restore()
        except Exception:
            log.debug("restoring %r failed; trying again", self, exc_info=True)
            return True
        underlay = self._channel
        if self._gone or underlay is None:
            return False
        channel = underlay.channel
        if channel.is_closed:
            return True
        recovery = asyncio.ensure_future(self._restore_missing_consumers(channel))
        closing = channel.closing
        try:
            await asyncio.wait(
                (recovery, self._closed, closing), return_when=asyncio.FIRST_COMPLETED
            )
            if self._gone:
                return False
            if closing.done():
                return True
            return await recovery
        finally:
            recovery.cancel()
            if not closing.done():
                closing.cancel()  # the shield only
            await asyncio.gather(recovery, return_exceptions=True)

    async def _restore_missing_consumers(self, channel: LowLevelChannel) -> bool:
        # one pass over the queues whose consumers are missing on ``channel``;
        # True: something failed, try again later
        retry = False
        async with self.__restore_lock:
            for queue in self._all_queues():
                missing = [tag for tag in queue._consumers if tag not in channel.consumers]
                if not missing:
                    continue
                try:
                    probe = await channel.connection.channel(publisher_confirms=False, timeout=5)
                    try:
                        await queue._probe(probe)
                    finally:
                        if not probe.is_closed:
                            await probe.close()
                    if not self.__restored.is_set() or channel.is_closed:
                        return False  # a restore brings them back
                    for tag in missing:
                        recorded = queue._consumers.get(tag)
                        if recorded is None or tag in channel.consumers:
                            continue  # cancelled meanwhile, or back already
                        callback, options = recorded
                        await Queue.consume(queue, callback, consumer_tag=tag, timeout=5, **options)
                        if queue._consumers.get(tag) is not recorded:
                            await channel.basic_cancel(tag)  # cancelled while it started
                        log.info("consumer %r of queue %r is back", tag, queue.name)
                except Exception as error:
                    log.debug("consumers of queue %r not back yet: %r", queue.name, error)
                    retry = True
        return retry

    def _connection_down(self) -> bool:
        connection = self._connection
        return bool(connection.close_called or connection.is_closed) or (
            not connection.connected.is_set()
        )

    def _left_to_the_connection(self) -> bool:
        # the connection is down, or its reconnect has yet to restore this channel
        return self.__awaiting_reconnect or self._connection_down()

    async def _on_close(self, closing: asyncio.Future[None]) -> BaseException | None:
        # The low-level channel closed. For good when close() was called (here
        # or on the connection); when the connection is down, or a reconnect
        # is restoring it, the connection's supervisor restores the channel;
        # else the broker closed it (an error): after a pause it is opened
        # again with its topology.
        error = self._close_reason(closing)
        self.__restored.clear()
        connection = self._connection
        if self._close_called or connection.close_called or connection.is_closed:
            self._set_closed(error)
            return error
        # closed for now: the callbacks hear of it as of any close (as in aio-pika)
        self.close_callbacks(error)
        if self._left_to_the_connection() or self.__reopening:
            return error
        log.warning("channel %s closed by the broker (%s): reopening", self, error)
        self.__reopening = True
        try:
            await self.__reopen_after_error()
        finally:
            self.__reopening = False
        return error

    async def __reopen_after_error(self) -> None:
        pause = self.REOPEN_PAUSE
        if pause is None:
            pause = getattr(type(self._connection), "CHANNEL_REOPEN_PAUSE", 1)
        await asyncio.sleep(pause)
        while not self._left_to_the_connection():
            try:
                await self.restore()
                return
            except AMQPError as failure:
                log.warning("reopening channel %s failed: %s; trying again", self, failure)
                await asyncio.sleep(self.RESTORE_RETRY_DELAY)
            except Exception:
                # the connection going away explains it; anything else is a bug to see
                if not self._connection_down():
                    raise

    async def restore(self, channel: Any = None) -> None:
        """Open the channel again with its QoS, exchanges, queues, bindings and consumers.

        Does nothing when the channel is open and restored, was closed with
        :meth:`close`, or its connection is closed or closing. One restore
        runs at a time. After a reconnect, the connection calls it for each
        channel in turn.

        :param channel: ignored (aio-pika took one once; passing it is deprecated).
        """
        _warn_channel_argument(channel)
        async with self.__restore_lock:
            connection = self._connection
            if (
                self.__restored.is_set()
                or self._close_called
                or connection.close_called
                or connection.is_closed
            ):
                return
            await self.reopen()

    async def reopen(self) -> None:
        """Open the channel again (after it closed) and restore what was declared on it."""
        self._close_called = False
        await self.restore_channel()
        await self.restore_topology()
        await self.restore_consumers()
        await self.reopen_callbacks()

    def _on_connection_lost(self) -> None:
        # not ready until the reconnect has restored it
        self.__restored.clear()
        self.__awaiting_reconnect = True
        for queue in self._all_queues():
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
        for queue in self._all_queues():
            await queue.restore_declaration()

    async def restore_queue_bindings(self) -> None:
        """Bind the queues (step 5)."""
        for queue in self._all_queues():
            await queue.restore_bindings()

    async def restore_consumers(self) -> None:
        """Start the consumers again (step 6); then the channel is ready."""
        for queue in self._all_queues():
            await queue.restore_consumers()
        self.__awaiting_reconnect = False
        self.__restored.set()

    async def restore_topology(self) -> None:
        """Steps 2 to 5 for this channel alone."""
        await self.restore_exchanges()
        await self.restore_exchange_bindings()
        await self.restore_queues()
        await self.restore_queue_bindings()

    async def close(self, exc: BaseException | None = None) -> None:
        """Close the channel for good."""
        self._close_called = True
        self.__restored.clear()
        underlay = self._channel
        if underlay is None or underlay.channel.is_closed:
            # never opened, or closed by the broker and not reopened yet
            self._set_closed(exc)
            return
        try:
            await super().close(exc)
        except AMQPConnectionError:
            # the connection went away during the close: the channel is
            # closed all the same (and stays closed after the reconnect)
            self._set_closed(exc)

    async def set_qos(
        self,
        prefetch_count: int = 0,
        prefetch_size: int = 0,
        global_: bool = False,
        timeout: TimeoutType = None,
        all_channels: bool | None = None,
    ) -> spec.Basic.QosOk:
        """Set QoS; it is set again after a reconnect (waits for a restore first)."""
        timeout = await self._wait_ready(timeout)
        result = await super().set_qos(
            prefetch_count, prefetch_size, global_, timeout, all_channels
        )
        if all_channels is not None:
            global_ = all_channels
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
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> RobustExchange:
        """Declare an exchange; ``robust``: declare it again after a reconnect.

        During a reconnect it waits for the restore (within ``timeout``).
        """
        timeout = await self._wait_ready(timeout)
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
        """Delete an exchange; it is not declared again after a reconnect.

        During a reconnect it waits for the restore (within ``timeout``).
        """
        timeout = await self._wait_ready(timeout)
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
        """Declare a queue; ``robust``: declare, bind and consume it again after a reconnect.

        During a reconnect it waits for the restore (within ``timeout``).
        """
        timeout = await self._wait_ready(timeout)
        if passive and name and self._queues.get(name):
            return self._queues[name][0]
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
            self._queues.setdefault(queue.name, []).append(queue)
        else:
            queue._adoptable = False  # its bindings and consumers do not come back either
        return queue

    async def queue_delete(
        self,
        queue_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> spec.Queue.DeleteOk | None:
        """Delete a queue; it is not declared again after a reconnect.

        During a reconnect it waits for the restore (within ``timeout``).
        """
        timeout = await self._wait_ready(timeout)
        result = await super().queue_delete(queue_name, timeout, if_unused, if_empty, nowait)
        for queue in self._queues.pop(queue_name, ()):
            queue._consumers.clear()
        return result

    def _forget_exchange(self, exchange: RobustExchange) -> None:
        if self._exchanges.get(exchange.name) is exchange:
            del self._exchanges[exchange.name]

    def _adopt_queue(self, queue: RobustQueue) -> None:
        # a queue not declared here (get_queue(ensure=False), the
        # constructor) that records a binding or a consumer: restored with
        # the others from now on
        known = self._queues.setdefault(queue.name, [])
        if queue not in known:
            known.append(queue)

    def _knows_queue(self, queue: RobustQueue) -> bool:
        return queue in self._queues.get(queue.name, ())

    def _forget_queue(self, queue: RobustQueue) -> None:
        others = [known for known in self._queues.get(queue.name, ()) if known is not queue]
        if others:
            self._queues[queue.name] = others
        else:
            self._queues.pop(queue.name, None)
