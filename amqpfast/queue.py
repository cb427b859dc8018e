"""Queues: bind, consume with a callback or an async iterator, get, purge, delete."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, cast, overload

from pamqp import commands as spec

from .abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractQueueIterator,
    ConsumerTag,
    ExchangeParamType,
    TimeoutType,
    get_exchange_name,
)
from .core.channel import ConsumerCallback
from .exceptions import QueueEmpty
from .message import IncomingMessage
from .tools import CallbackCollection, weak_method_callback

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger("amqpfast.queue")
# what a consumer's deliveries become, made by the low level (no frame per message)
_INCOMING = IncomingMessage.delivered
_INCOMING_NO_ACK = IncomingMessage.delivered_no_ack

__all__ = ["ConsumerTag", "Queue", "QueueIterator"]

Arguments = dict[str, Any] | None
Callback = Callable[[IncomingMessage], Awaitable[Any] | Any]


class Queue(AbstractQueue):
    """A queue on a channel (made by :meth:`Channel.declare_queue`)."""

    channel: Channel

    def __init__(
        self,
        channel: Channel,
        name: str | None,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Arguments,
        passive: bool = False,
    ) -> None:
        self.channel = channel
        self.name = name or ""
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.arguments = arguments
        self.passive = passive
        self.declaration_result: spec.Queue.DeclareOk | None = None
        self.close_callbacks: CallbackCollection[Any, ...] = CallbackCollection(self)
        # however the queue was made (declared, get_queue, this constructor),
        # its callbacks hear of its channel's close (held weakly by the channel)
        channel.close_callbacks.add(self.close_callbacks, weak=True)

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}({self}): auto_delete={self.auto_delete}, "
            f"durable={self.durable}, exclusive={self.exclusive}, "
            f"arguments={self.arguments!r}>"
        )

    async def declare(self, timeout: TimeoutType = None) -> spec.Queue.DeclareOk:
        """Declare the queue; a server-named queue takes the name the broker gave."""
        channel = await self.channel.get_underlay_channel()
        result = await channel.queue_declare(
            self.name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=self.arguments,
            passive=self.passive,
            timeout=timeout,
        )
        self.declaration_result = result
        self.name = result.queue or self.name
        return result

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Queue.BindOk:
        """Bind to an exchange; the routing key defaults to the queue's name."""
        channel = await self.channel.get_underlay_channel()
        return await channel.queue_bind(  # type: ignore[return-value]
            self.name,
            exchange=get_exchange_name(exchange),
            routing_key=self.name if routing_key is None else routing_key,
            arguments=arguments,
            timeout=timeout,
        )

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Queue.UnbindOk:
        """Remove a binding; the routing key defaults to the queue's name."""
        channel = await self.channel.get_underlay_channel()
        return await channel.queue_unbind(
            self.name,
            exchange=get_exchange_name(exchange),
            routing_key=self.name if routing_key is None else routing_key,
            arguments=arguments,
            timeout=timeout,
        )

    async def consume(
        self,
        callback: Callback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
    ) -> ConsumerTag:
        """Start a consumer: ``callback(message)`` for each delivery, in order.

        The callback may be a coroutine function or a plain function; an
        :class:`IncomingMessage` is acked with ``message.ack()`` (or
        ``message.process()``) unless ``no_ack``.

        :returns: the consumer tag, for :meth:`cancel`.
        """
        channel = await self.channel.get_underlay_channel()
        ok = await channel.basic_consume(
            self.name,
            cast(ConsumerCallback, callback),  # it gets what message_factory makes
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
            # each delivery made into an IncomingMessage by the low level, in C
            message_factory=_INCOMING_NO_ACK if no_ack else _INCOMING,
        )
        return ok.consumer_tag or ""

    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> spec.Basic.CancelOk | None:
        """Stop a consumer started by :meth:`consume`."""
        channel = await self.channel.get_underlay_channel()
        return await channel.basic_cancel(consumer_tag, nowait=nowait, timeout=timeout)

    @overload
    async def get(
        self, *, no_ack: bool = False, fail: Literal[True] = ..., timeout: TimeoutType = ...
    ) -> IncomingMessage: ...

    @overload
    async def get(
        self, *, no_ack: bool = False, fail: Literal[False] = ..., timeout: TimeoutType = ...
    ) -> IncomingMessage | None: ...

    async def get(
        self, *, no_ack: bool = False, fail: bool = True, timeout: TimeoutType = 5
    ) -> IncomingMessage | None:
        """Fetch one message.

        :param fail: raise :class:`~amqpfast.exceptions.QueueEmpty` for an
            empty queue (else return None).
        """
        channel = await self.channel.get_underlay_channel()
        delivered = await channel.basic_get(self.name, no_ack=no_ack, timeout=timeout)
        if isinstance(delivered.delivery, spec.Basic.GetEmpty):
            if fail:
                raise QueueEmpty(f"queue {self.name!r} is empty")
            return None
        return IncomingMessage(delivered, no_ack=no_ack)

    async def purge(
        self, no_wait: bool = False, timeout: TimeoutType = None
    ) -> spec.Queue.PurgeOk | None:
        """Drop every ready message."""
        log.info("purging %r", self)
        channel = await self.channel.get_underlay_channel()
        return await channel.queue_purge(self.name, nowait=no_wait, timeout=timeout)

    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> spec.Queue.DeleteOk:
        """Delete the queue (by default only when unused and empty)."""
        log.info("deleting %r", self)
        channel = await self.channel.get_underlay_channel()
        return await channel.queue_delete(  # type: ignore[return-value]
            self.name, if_unused=if_unused, if_empty=if_empty, timeout=timeout
        )

    def iterator(self, **kwargs: Any) -> QueueIterator:
        """The queue's messages as an async iterator (see :class:`QueueIterator`).

        Keyword arguments go to :meth:`consume`; ``timeout`` also bounds each
        wait for a message.
        """
        return QueueIterator(self, **kwargs)

    def __aiter__(self) -> QueueIterator:
        return self.iterator()


class MessageBuffer(deque[IncomingMessage]):
    """The messages an iterator has fetched and not yet handed out.

    It answers ``empty()`` and ``qsize()`` as the ``asyncio.Queue`` that
    aio-pika keeps in ``QueueIterator._queue`` does, for code that looks.
    """

    __slots__ = ()  # no instance dict: its methods load as fast as a deque's

    def empty(self) -> bool:
        return not self

    def qsize(self) -> int:
        return len(self)


class QueueIterator(AbstractQueueIterator):
    """Consume a queue with ``async for``.

    ``async with queue.iterator() as messages: async for message in messages``.
    Leaving the block cancels the consumer and requeues the messages fetched
    but not handed out. A ``timeout`` that passes without a message (or a
    cancelled wait) closes the iterator and raises; a close that does not
    finish within the timeout (or that a second cancel stops waiting for)
    goes on in the background, and leaving the ``async with`` block stops
    it. A closed channel ends the iteration.
    """

    DEFAULT_CLOSE_TIMEOUT = 5

    def __init__(self, queue: Queue, **kwargs: Any) -> None:
        self._amqp_queue = queue
        self._consume_kwargs = kwargs
        self._queue: MessageBuffer = MessageBuffer()
        self._waiters: list[asyncio.Future[None]] = []  # readers waiting for a message
        self._consumer_tag: ConsumerTag | None = None
        self._closed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._is_closed = False  # _closed is done (a flag for the hot path to read)
        self._channel_closed = False
        # (long-lived future, our callback on it): removed when the iterator closes
        self._wakeups: list[tuple[asyncio.Future[Any], Callable[..., Any]]] = []
        self._wake_up_on(queue.channel.closed(), self._on_channel_closed)
        self._closed.add_done_callback(self._on_iterator_closed)

    @property
    def consumer_tag(self) -> ConsumerTag | None:
        """The consumer's tag once it started."""
        return self._consumer_tag

    def __str__(self) -> str:
        return f"queue[{self._amqp_queue}](...)"

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__}: queue={self._amqp_queue.name!r} ctag={self._consumer_tag!r}>"
        )

    def _wake_up_on(self, future: Awaitable[Any], method: Callable[[Any], None]) -> None:
        # The future lives longer than the iterator (a channel's closed()): it
        # must not keep the iterator alive, so the callback holds it weakly.
        callback = weak_method_callback(method)
        waitable = asyncio.ensure_future(future)
        self._wakeups.append((waitable, callback))
        waitable.add_done_callback(callback)

    def _on_channel_closed(self, _future: Any) -> None:
        self._channel_closed = True
        self._wake()

    def _set_closed(self) -> None:
        """End the iteration: no message is handed out from now on."""
        self._is_closed = True
        if not self._closed.done():
            self._closed.set_result(True)

    def _on_iterator_closed(self, _future: Any) -> None:
        self._is_closed = True  # also when code resolved _closed itself
        self._wake()
        wakeups, self._wakeups = self._wakeups, []
        for future, callback in wakeups:
            future.remove_done_callback(callback)

    def _on_message(self, message: IncomingMessage) -> None:
        # a plain callback: no task per message
        self._queue.append(message)
        if self._waiters:  # most come while the iterator is busy with an earlier one
            self._wake()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Take a delivery into the buffer (override to filter or wrap them)."""
        self._on_message(message)  # type: ignore[arg-type]

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def consume(self) -> None:
        """Start the consumer (done by the first iteration or ``async with``)."""
        # the plain callback unless a subclass has its own on_message
        overridden = type(self).on_message is not QueueIterator.on_message
        self._consumer_tag = await self._amqp_queue.consume(
            self.on_message if overridden else self._on_message, **self._consume_kwargs
        )

    async def close(self) -> None:
        """Cancel the consumer and requeue the messages not handed out."""
        try:
            await self._cancel_consumer()
        finally:
            self._set_closed()

    async def _cancel_consumer(self) -> None:
        consumer_tag, self._consumer_tag = self._consumer_tag, None
        if consumer_tag is None:
            return
        channel = self._amqp_queue.channel
        if channel.is_closed:
            self._queue.clear()  # the broker delivers them again
            return
        await self._amqp_queue.cancel(consumer_tag)
        no_ack = self._consume_kwargs.get("no_ack", False)
        failures: list[Exception] = []
        while self._queue:
            message = self._queue.popleft()
            if no_ack:
                log.warning("message %r lost: the iterator consumed with no_ack", message)
                continue
            try:
                await message.nack(requeue=True)
            except Exception as error:
                log.warning("could not requeue message %r", message, exc_info=error)
                failures.append(error)
        if failures:
            raise ExceptionGroup("Unable to nack all messages", failures)

    def __aiter__(self) -> QueueIterator:
        return self

    async def __aenter__(self) -> QueueIterator:
        if self._consumer_tag is None and not self._closed.done():
            await self.consume()
        return self

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        closing: asyncio.Task[Any] | None = self.__dict__.pop("_QueueIterator__closing", None)
        if closing is None:
            await self.close()
            return
        # A close that outlived a timeout in __anext__: stop it instead of
        # waiting for a broker that may not answer.
        if not closing.done():
            closing.cancel()
        outcome: BaseException | None
        try:
            (outcome,) = await asyncio.gather(closing, return_exceptions=True)
        finally:
            self._set_closed()
        if isinstance(outcome, asyncio.CancelledError) or outcome is None:
            return
        if isinstance(outcome, BaseException):
            if exc_value is None:
                raise outcome
            log.warning("closing %r failed", self, exc_info=outcome)

    async def _close_after_wait_failed(self, timeout: float | None) -> None:
        # A timed-out or cancelled wait closes the iterator; the close gets
        # as long as the wait had (DEFAULT_CLOSE_TIMEOUT without a timeout)
        # and then goes on in the background (__aexit__ stops it).
        close_timeout = timeout if timeout is not None and timeout > 0 else None
        if close_timeout is None:
            close_timeout = self.DEFAULT_CLOSE_TIMEOUT
        log.info("%r closing, waiting up to %s seconds", self, close_timeout)
        task = asyncio.ensure_future(self.close())
        try:
            await asyncio.wait_for(asyncio.shield(task), close_timeout)
        except TimeoutError:
            self.__closing = task
        except asyncio.CancelledError:
            # cancelled again while closing: the caller will not wait any longer
            self.__closing = task
            raise

    def _exhausted(self) -> bool:
        # nothing more will come: closed, or its channel closed for good
        return self._closed.done() or self._channel_closed

    async def __anext__(self) -> IncomingMessage:
        queue = self._queue
        if queue and not self._is_closed:  # the common case: one is waiting
            return queue.popleft()
        if self._closed.done():
            raise StopAsyncIteration
        if self._consumer_tag is None:
            await self.consume()
        timeout: float | None = self._consume_kwargs.get("timeout")
        while not self._queue:
            if self._exhausted():
                raise StopAsyncIteration
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                if timeout is not None and timeout > 0:
                    await asyncio.wait_for(waiter, timeout)
                else:
                    await waiter
            except (TimeoutError, asyncio.CancelledError):
                await self._close_after_wait_failed(timeout)
                raise
        return self._queue.popleft()
