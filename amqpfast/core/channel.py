"""The low-level channel: the AMQP methods by name, confirms, consumers, returns."""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import operator
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pamqp import commands as spec
from pamqp import constants as pamqp_constants

from ..codec import (
    BasicAck,
    BasicDeliver,
    BasicGetOk,
    BasicNack,
    BasicProperties,
    BasicReturn,
    MessageBase,
)
from ..exceptions import (
    SYNTAX_ERROR,
    ChannelClosed,
    ChannelInvalidStateError,
    ConnectionProtocolError,
    DeliveryError,
    DuplicateConsumerTag,
    PublishError,
    channel_error,
)
from ._drive import DONE, CallbackRunner
from .message import DeliveredMessage

if TYPE_CHECKING:
    from .connection import Connection

# Writes pile up in the FrameWriter until the loop turns; past this size
# they go out at once, so a publisher that never yields cannot grow memory.
FLUSH_THRESHOLD = 256 * 1024

log = logging.getLogger("amqpfast.core")

__all__ = ["CallbackCollection", "Channel", "ConsumerCallback", "ReturnCallback"]

_Reply = TypeVar("_Reply")
ConsumerCallback = Callable[[DeliveredMessage], Any]
# what a consumer's deliveries are handed on as: made of (delivery, properties, body, channel)
MessageFactory = Callable[[Any, BasicProperties, bytes, "Channel"], Any]
ReturnCallback = Callable[[DeliveredMessage], Any]
Arguments = dict[str, Any] | None

_tag_counter = itertools.count(1)
_PamqpAck = spec.Basic.Ack
_new_ack = _PamqpAck.__new__
_PamqpNack = spec.Basic.Nack
_PamqpReturn = spec.Basic.Return
_PamqpGetOk = spec.Basic.GetOk
# what pamqp takes as a queue name: a name the broker gives must pass it
_QUEUE_NAME = pamqp_constants.DOMAIN_REGEX["queue-name"]


class CallbackCollection(list[Any]):
    """Callbacks in the order they were added: a list that also takes set methods.

    aiormq keeps these in sets (``add``, ``discard``), amqpfast in lists
    (``append``, ``remove``); both kinds of code use the same object.
    """

    def add(self, callback: Any) -> None:
        """Add a callback unless it is there already."""
        if callback not in self:
            self.append(callback)

    def discard(self, callback: Any) -> None:
        """Remove a callback if it is there."""
        if callback in self:
            self.remove(callback)

    def update(self, callbacks: Any) -> None:
        """Add each of several callbacks (those there already are skipped)."""
        for callback in callbacks:
            self.add(callback)


def _as_pamqp(method: Any, kind: type[Any]) -> Any:
    """A codec-decoded method as pamqp's class, which aiormq code checks for."""
    converted: Any = object.__new__(kind)
    for name, value in method:
        setattr(converted, name, value)
    return converted


def _replies(method: Any) -> tuple[type, ...]:
    """pamqp's classes of the replies a synchronous method may get."""
    replies = []
    for name in method.valid_responses:
        class_name, _, method_name = name.partition(".")
        replies.append(getattr(getattr(spec, class_name), method_name))
    return tuple(replies)


class ActsAsCoroutine:
    """``throw`` and ``close``: with ``send``, asyncio takes an awaitable for a coroutine.

    For what stands in for a publish coroutine (``asyncio.create_task``
    accepts only coroutines); ``send`` is the subclass's own.
    """

    __slots__ = ()

    def throw(self, error: Any, value: Any = None, traceback: Any = None) -> Any:
        if value is None:
            value = error if isinstance(error, BaseException) else error()
        raise value.with_traceback(traceback) if traceback is not None else value

    def close(self) -> None:
        pass


class Confirmation(ActsAsCoroutine, asyncio.Future[Any]):
    """The broker's answer to a publish on a confirm channel, as a Future.

    What :meth:`Channel.publish` returns: ``asyncio.gather`` takes it as it
    is (no Task per publish), ``await`` turns a cancel that came with the
    channel's close into the close's error (:meth:`Channel.close_error`),
    and ``asyncio.create_task`` takes it too, as it would a publish coroutine.

    It keeps its done callbacks itself until it is done: the confirms one
    Basic.Ack settles then run theirs in one turn of the loop, in order,
    instead of a loop callback each (gather's, a Task's wake-up).
    """

    __slots__ = ("_channel", "_waiting")
    _channel: Channel
    _waiting: list[tuple[Callable[..., Any], contextvars.Context]] | None

    def add_done_callback(
        self, fn: Callable[..., Any], *, context: contextvars.Context | None = None
    ) -> None:
        if self.done():  # scheduled at once, as by any Future
            asyncio.Future.add_done_callback(self, fn, context=context)
            return
        entry = (fn, contextvars.copy_context() if context is None else context)
        if self._waiting is None:
            self._waiting = [entry]
        else:
            self._waiting.append(entry)

    def remove_done_callback(self, fn: Callable[..., Any]) -> int:
        removed = asyncio.Future.remove_done_callback(self, fn)
        waiting = self._waiting
        if waiting and not self.done():  # once done, they are as good as scheduled
            kept = [entry for entry in waiting if entry[0] != fn]
            removed += len(waiting) - len(kept)
            self._waiting = kept or None
        return removed

    # Ended any other way than by a Basic.Ack: its callbacks are scheduled
    # one by one, as a Future schedules them.
    def set_result(self, result: Any) -> None:
        asyncio.Future.set_result(self, result)
        self._schedule_waiting()

    def set_exception(self, exception: type | BaseException) -> None:
        asyncio.Future.set_exception(self, exception)
        self._schedule_waiting()

    def cancel(self, msg: Any | None = None) -> bool:
        if not asyncio.Future.cancel(self, msg):
            return False
        self._schedule_waiting()
        return True

    def _schedule_waiting(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting:
            loop = self.get_loop()
            for fn, context in waiting:
                loop.call_soon(fn, self, context=context)

    def __await__(self) -> Generator[Any, None, Any]:
        try:
            return (yield from asyncio.Future.__await__(self))
        except asyncio.CancelledError as cancelled:
            raise self._channel.close_error(cancelled) from cancelled

    __iter__ = __await__

    def send(self, value: Any) -> Any:
        # a Task made of it waits on the future itself
        if not self.done():
            self._asyncio_future_blocking = True
            return self
        raise StopIteration(self.result())


def _run_done_callbacks(settled: list[Confirmation]) -> None:
    # the done callbacks of the confirms one frame settled, in one loop turn,
    # in the order a loop callback each would have run them
    for future in settled:
        waiting, future._waiting = future._waiting, None
        for fn, context in waiting or ():
            try:
                context.run(fn, future)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:  # what the loop does with a failing callback
                future.get_loop().call_exception_handler(
                    {"message": f"Exception in callback {fn!r}", "exception": exc, "future": future}
                )


_settle = asyncio.Future.set_result  # Confirmation's own also schedules its callbacks


class _Pending:
    """A synchronous method sent, its reply awaited."""

    __slots__ = ("expect", "future", "on_reply")

    def __init__(
        self,
        expect: tuple[type, ...],
        future: asyncio.Future[Any],
        on_reply: Callable[[Any], None] | None,
    ) -> None:
        self.expect = expect
        self.future = future
        self.on_reply = on_reply  # called with the reply before the caller gets it


class Channel:
    """An AMQP channel: every method of the protocol as an awaitable.

    Made by :meth:`Connection.channel`. One synchronous method is in flight at
    a time; every wait takes a ``timeout``; a closed channel raises
    :class:`~amqpfast.exceptions.ChannelInvalidStateError` at once.

    The methods take aiormq's names, arguments and defaults and return what
    aiormq's do (pamqp's reply frames), so code written for ``aiormq.Channel``
    runs on this class; :mod:`amqpfast.aiormq` names it so.
    """

    # seconds close() waits for the broker's CloseOk when given no timeout
    CHANNEL_CLOSE_TIMEOUT: float = 10

    def __init__(
        self,
        connection: Connection,
        number: int,
        publisher_confirms: bool = True,
        on_return_raises: bool = True,
    ) -> None:
        self.connection = connection
        self.number = number
        self.publisher_confirms = publisher_confirms
        self.on_return_raises = on_return_raises
        self.loop = connection.loop
        self._writer = connection._writer
        self._lock = asyncio.Lock()
        self._pending: deque[_Pending] = deque()
        self._consumers: dict[str, tuple[ConsumerCallback, MessageFactory]] = {}
        # Tags of consumers that acknowledge; and of those cancelled while
        # deliveries may still be on their way: those go back to the queue.
        self._acking_consumers: set[str] = set()
        self._requeue_for: set[str] = set()
        self._dropping_for: set[str] = set()  # the same, of consumers without acks
        self._runner = CallbackRunner(self.loop, "consumer callback", connection.defer_runner)
        self._opened = False
        self._closed = False
        # our Channel.Close is out and its CloseOk not back: the number stays taken
        self._awaiting_close_ok = False
        self._closing: asyncio.Future[None] = self.loop.create_future()
        # publisher confirms: delivery tag -> future; returned mandatory
        # messages find their publish through their message_id
        self.confirm_mode = False
        self._delivery_tag = 0
        self._confirms: dict[int, Confirmation] = {}
        self._confirm_floor = 1
        # mandatory publishes awaiting their confirm, oldest first: tag ->
        # (message_id, exchange, routing key), how a Basic.Return finds its
        # publish
        self._tag_keys: dict[int, tuple[str, str, str]] = {}
        # Channel.Flow from the broker: publishing waits while it is off
        self.flow_active = True
        self._flow_resumed: asyncio.Future[None] | None = None
        # called with each returned message
        self.on_return_callbacks = CallbackCollection()
        # called with the tag of a consumer the broker cancelled
        self.on_cancel_callbacks = CallbackCollection()
        # aiormq's: called with the broker's Basic.Cancel frame
        self.on_consumer_cancel_callbacks = CallbackCollection()

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open" if self._opened else "new"
        return f"<Channel {self.number} {state}>"

    def __str__(self) -> str:
        return str(self.number)

    @property
    def closing(self) -> asyncio.Future[None]:
        """Done when the channel is closed, with its error (None for a normal close).

        A shield of the channel's own future: awaiting it with a timeout, or
        cancelling the waiter, does not touch the channel.
        """
        return asyncio.shield(self._closing)

    # read for every ack: a C getter, no Python frame
    is_closed = property(
        operator.attrgetter("_closed"),
        doc="The channel is closed, by us, the broker or the connection.",
    )

    @property
    def consumers(self) -> dict[str, ConsumerCallback]:
        """The active consumers: consumer tag -> callback."""
        return {tag: callback for tag, (callback, _) in self._consumers.items()}

    def _check_open(self) -> None:
        if self._closed:
            error = self._closing.exception() if self._closing.done() else None
            raise ChannelInvalidStateError(
                f"channel {self.number} is closed" + (f": {error}" if error else "")
            )

    # ------------------------------------------------------------ rpc

    async def _call(
        self,
        method: Any,
        expect: tuple[type, ...],
        timeout: float | None,
        on_reply: Callable[[Any], None] | None = None,
        opening: bool = False,
    ) -> Any:
        """Send a synchronous method and wait for its reply.

        A call that times out or is cancelled closes the channel, as aiormq's
        do: what the method did on the broker is unknown, and its reply may
        still come (a late ConsumeOk would start a consumer nobody expects).
        """
        async with self._lock:
            if not opening:
                self._check_open()
            pending = _Pending(expect, self.loop.create_future(), on_reply)
            # sent first: a method that fails to encode leaves no entry behind
            self.connection._send_method(self.number, method)
            self._pending.append(pending)
            closing = type(method) is spec.Channel.Close
            if closing:
                self._awaiting_close_ok = True
            try:
                if timeout is None:
                    return await pending.future
                return await asyncio.wait_for(pending.future, timeout)
            except (TimeoutError, asyncio.CancelledError):
                # an opening given up is the connection's to close; a Close, close()'s
                if not (opening or closing):
                    reason = f"closed: {type(method).__name__} timed out or was cancelled"
                    # later calls learn why the channel is gone
                    self._abandon(
                        reason, ChannelInvalidStateError(f"channel {self.number} {reason}")
                    )
                raise

    def _send_async(self, method: Any) -> None:
        self._check_open()
        self.connection._send_method(self.number, method)

    async def _request(
        self, method: Any, reply: type[_Reply], nowait: bool, timeout: float | None
    ) -> _Reply | None:
        """A synchronous method, or with ``nowait`` one sent without waiting (None)."""
        if nowait:
            self._send_async(method)
            return None
        result: _Reply = await self._call(method, (reply,), timeout)
        return result

    def _resolve(self, method: Any) -> bool:
        # One call waits at a time (a call that gives up closes the channel),
        # so a reply can only be the answer to the head.
        pending = self._pending
        if not pending or not isinstance(method, pending[0].expect):
            return False
        head = pending.popleft()
        if not head.future.done():
            if head.on_reply is not None:
                head.on_reply(method)
            head.future.set_result(method)
        return True

    # ------------------------------------------------------------ reading

    def _on_content(self, event: Any) -> None:
        method = event.method
        kind = type(method)
        if kind is BasicDeliver:
            consumer = self._consumers.get(method.consumer_tag)
            if consumer is not None:
                callback, make_message = consumer
                self._runner.call(
                    callback, make_message(method, event.properties, event.body, self)
                )
            elif method.consumer_tag in self._requeue_for:
                # cancelled without waiting for CancelOk: the message goes back, now
                self.basic_reject(method.delivery_tag, requeue=True)
            elif method.consumer_tag in self._dropping_for:
                pass  # no ack expected: the broker counts it delivered
            elif not self._closed:  # after our Close the broker requeues them itself
                # not ours (a broken peer): back to the queue rather than held
                # unacked until the channel closes
                log.warning("delivery for unknown consumer %r requeued", method.consumer_tag)
                self.basic_reject(method.delivery_tag, requeue=True)
        elif kind is BasicGetOk:
            delivery = _as_pamqp(method, _PamqpGetOk)
            self._resolve(DeliveredMessage(delivery, event.properties, event.body, self))
        elif kind is BasicReturn:
            delivery = _as_pamqp(method, _PamqpReturn)
            self._on_return(DeliveredMessage(delivery, event.properties, event.body, self))

    def _on_method(self, method: Any) -> None:
        kind = type(method)
        if kind is BasicAck:
            self._on_ack(method)
        elif kind is BasicNack:
            self._on_nack(method)
        elif self._resolve(method):
            pass
        elif isinstance(method, spec.Channel.Close):
            self.connection._send_method(self.number, spec.Channel.CloseOk())
            self._on_closed(channel_error(method.reply_code or 0, method.reply_text or ""))
        elif isinstance(method, spec.Basic.Cancel):
            known = method.consumer_tag in self._consumers
            self._on_broker_cancel(method)
            # RabbitMQ sets nowait, but from 4.3 on (the capability says so)
            # it keeps the tag taken until the client answers
            if not method.nowait or (known and self.connection.accept_consumer_cancel_ok):
                self.connection._send_method(
                    self.number, spec.Basic.CancelOk(consumer_tag=method.consumer_tag)
                )
        elif isinstance(method, spec.Channel.Flow):
            self._set_flow(bool(method.active))
            self.connection._send_method(self.number, spec.Channel.FlowOk(active=method.active))
        elif isinstance(method, spec.Channel.CloseOk):
            # the answer to our Close, after a timeout, an abandoned opening or
            # a crossing Close from the broker: the number is free now
            self._awaiting_close_ok = False
            if self._closed:
                self.connection._release(self)
        elif not self._closed:  # after our Channel.Close the rest is to be ignored
            log.warning("channel %d: unexpected %r", self.number, method)

    # ------------------------------------------------------------ closing

    def _on_closed(self, error: BaseException) -> None:
        if self._closed and self._closing.done():
            return
        self._closed = True
        if not self._closing.done():
            if isinstance(error, ChannelClosed) and error.reply_code in (0, 200):
                self._closing.set_result(None)
            else:
                self._closing.set_exception(error)
                self._closing.exception()  # retrieved: nobody has to await it
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(error)
        confirms, self._confirms = self._confirms, {}
        for future in confirms.values():
            if not future.done():
                future.set_exception(error)
        self._tag_keys.clear()
        self._set_flow(True)  # publishes waiting for it see the close
        self._consumers.clear()
        # as with aio-pika: handlers do not outlive their channel (the error
        # goes with the cancel: a publish in a handler raises it, see basic_publish)
        self._runner.cancel(error)
        self._acking_consumers.clear()
        self._requeue_for.clear()
        self._dropping_for.clear()
        # Until the broker answers our Close (even one crossing its own), the
        # number stays taken: the CloseOk branch releases it.
        if not self._awaiting_close_ok:
            self.connection._release(self)

    def _on_connection_closed(self, error: BaseException) -> None:
        self._on_closed(error)

    async def close(
        self, exc: BaseException | type[BaseException] | None = None, timeout: float | None = None
    ) -> None:
        """Close the channel (Channel.Close, then wait for CloseOk).

        A CloseOk that does not come in time (a stalled peer, or a call
        ahead of the Close that gets no answer) closes the channel here all
        the same; its number stays taken until the broker answers.

        :param exc: the error to close with: ``closing`` and the publishes
            still awaiting their confirm fail with it (None: a normal close).
        :param timeout: seconds to wait for CloseOk (default
            :attr:`CHANNEL_CLOSE_TIMEOUT`).
        """
        if self._closed:
            return
        if isinstance(exc, type):
            exc = exc()
        if not self._opened and not self._pending:  # the broker never heard of it
            self._on_closed(ChannelClosed(200, "never opened") if exc is None else exc)
            return
        error = ChannelClosed(200, "Normal shutdown") if exc is None else exc
        if timeout is None:
            timeout = self.CHANNEL_CLOSE_TIMEOUT
        try:
            # around the lock too: a call ahead may never get its answer
            async with asyncio.timeout(timeout):
                await self._call(
                    spec.Channel.Close(reply_code=200, reply_text="Normal shutdown"),
                    (spec.Channel.CloseOk,),
                    None,
                )
            self._awaiting_close_ok = False
        except TimeoutError:
            log.warning("channel %d: no CloseOk within %s s; closed", self.number, timeout)
            if not self._awaiting_close_ok:  # still behind that call: the Close goes out now
                self._abandon("Normal shutdown", error)
        except ChannelInvalidStateError:
            # closed while this close waited behind a call that was given up
            # (that closed the channel): nothing is left to do
            if not self._closed:
                raise
        finally:
            self._on_closed(error)

    def _abandon(
        self, reason: str = "opening abandoned", error: BaseException | None = None
    ) -> None:
        """Close a channel whose opening, or a call on it, was given up (a
        timeout, a cancel).

        The broker gets Channel.Close right behind what it was sent, and the
        number stays taken until the CloseOk comes back.
        """
        if self._closed:
            return
        if self.connection.is_opened:
            self.connection._send_method(
                self.number, spec.Channel.Close(reply_code=200, reply_text=reason[:255])
            )
            self._awaiting_close_ok = True
        self._on_closed(error or ChannelClosed(200, reason))

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ channel class

    async def open(self, timeout: float | None = None) -> spec.Channel.OpenOk:
        """Open the channel, then select confirm mode if it was asked for."""
        result = await self._call(
            spec.Channel.Open(), (spec.Channel.OpenOk,), timeout, opening=True
        )
        self._opened = True
        if self.publisher_confirms:
            await self.confirm_select(timeout=timeout)
        return result  # type: ignore[no-any-return]

    async def flow(self, active: bool, timeout: float | None = None) -> spec.Channel.FlowOk:
        """Ask the broker to pause (False) or resume (True) deliveries."""
        return await self._call(  # type: ignore[no-any-return]
            spec.Channel.Flow(active=active), (spec.Channel.FlowOk,), timeout
        )

    async def rpc(self, frame: Any, timeout: float | None = None) -> Any:
        """Send any method and return the broker's reply (aiormq's generic call).

        An asynchronous method, or a synchronous one sent with ``nowait``,
        returns None at once.
        """
        if not frame.synchronous or getattr(frame, "nowait", False):
            self._send_async(frame)
            return None
        if isinstance(frame, spec.Basic.Get):
            message = await self.basic_get(frame.queue, frame.no_ack, timeout)
            return message.delivery
        return await self._call(frame, _replies(frame), timeout)

    # ------------------------------------------------------------ exchanges

    @overload
    async def exchange_declare(
        self,
        exchange: str = "",
        exchange_type: str = "direct",
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        nowait: Literal[False] = False,
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Exchange.DeclareOk: ...

    @overload
    async def exchange_declare(
        self,
        exchange: str = "",
        exchange_type: str = "direct",
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        *,
        nowait: Literal[True],
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> None: ...

    async def exchange_declare(
        self,
        exchange: str = "",
        exchange_type: str = "direct",
        passive: bool = False,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        nowait: bool = False,
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Exchange.DeclareOk | None:
        """Declare an exchange (``passive``: only check that it exists)."""
        method = spec.Exchange.Declare(
            exchange=exchange,
            exchange_type=exchange_type,
            passive=passive,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            nowait=nowait,
            arguments=arguments,
        )
        return await self._request(method, spec.Exchange.DeclareOk, nowait, timeout)

    async def exchange_delete(
        self,
        exchange: str = "",
        if_unused: bool = False,
        nowait: bool = False,
        timeout: float | None = None,
    ) -> spec.Exchange.DeleteOk | None:
        """Delete an exchange."""
        method = spec.Exchange.Delete(exchange=exchange, if_unused=if_unused, nowait=nowait)
        return await self._request(method, spec.Exchange.DeleteOk, nowait, timeout)

    async def exchange_bind(
        self,
        destination: str = "",
        source: str = "",
        routing_key: str = "",
        nowait: bool = False,
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Exchange.BindOk | None:
        """Bind exchange ``destination`` to exchange ``source``."""
        method = spec.Exchange.Bind(
            destination=destination,
            source=source,
            routing_key=routing_key,
            nowait=nowait,
            arguments=arguments,
        )
        return await self._request(method, spec.Exchange.BindOk, nowait, timeout)

    async def exchange_unbind(
        self,
        destination: str = "",
        source: str = "",
        routing_key: str = "",
        nowait: bool = False,
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Exchange.UnbindOk | None:
        """Remove an exchange-to-exchange binding."""
        method = spec.Exchange.Unbind(
            destination=destination,
            source=source,
            routing_key=routing_key,
            nowait=nowait,
            arguments=arguments,
        )
        return await self._request(method, spec.Exchange.UnbindOk, nowait, timeout)

    # ------------------------------------------------------------ queues

    @overload
    async def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        nowait: Literal[False] = False,
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Queue.DeclareOk: ...

    @overload
    async def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        *,
        nowait: Literal[True],
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> None: ...

    async def queue_declare(
        self,
        queue: str = "",
        passive: bool = False,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        nowait: bool = False,
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Queue.DeclareOk | None:
        """Declare a queue; an empty name asks the broker to choose one.

        :raises ConnectionProtocolError: the broker answered with a queue name
            that no method takes (502; the connection is closed).
        """
        method = spec.Queue.Declare(
            queue=queue,
            passive=passive,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            nowait=nowait,
            arguments=arguments,
        )
        result = await self._request(method, spec.Queue.DeclareOk, nowait, timeout)
        if result is not None and not _QUEUE_NAME.fullmatch(result.queue or ""):
            # Every later method on the queue would fail pamqp's check of the
            # name with a ValueError: a reply with an illegal value is a
            # syntax error of the broker's, as the codec reports them.
            self.connection._on_protocol_error(
                ConnectionProtocolError(
                    SYNTAX_ERROR,
                    f"Queue.DeclareOk names the queue {result.queue!r}, not a valid queue name",
                )
            )
            self.connection._check_open()  # raises that error
        return result

    async def queue_bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        nowait: bool = False,
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Queue.BindOk | None:
        """Bind a queue to an exchange."""
        method = spec.Queue.Bind(
            queue=queue,
            exchange=exchange,
            routing_key=routing_key,
            nowait=nowait,
            arguments=arguments,
        )
        return await self._request(method, spec.Queue.BindOk, nowait, timeout)

    async def queue_unbind(
        self,
        queue: str = "",
        exchange: str = "",
        routing_key: str = "",
        arguments: Arguments = None,
        timeout: float | None = None,
    ) -> spec.Queue.UnbindOk:
        """Remove a queue binding."""
        method = spec.Queue.Unbind(
            queue=queue, exchange=exchange, routing_key=routing_key, arguments=arguments
        )
        return await self._call(method, (spec.Queue.UnbindOk,), timeout)  # type: ignore[no-any-return]

    async def queue_purge(
        self, queue: str = "", nowait: bool = False, timeout: float | None = None
    ) -> spec.Queue.PurgeOk | None:
        """Remove all ready messages from a queue."""
        method = spec.Queue.Purge(queue=queue, nowait=nowait)
        return await self._request(method, spec.Queue.PurgeOk, nowait, timeout)

    async def queue_delete(
        self,
        queue: str = "",
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
        timeout: float | None = None,
    ) -> spec.Queue.DeleteOk | None:
        """Delete a queue."""
        method = spec.Queue.Delete(
            queue=queue, if_unused=if_unused, if_empty=if_empty, nowait=nowait
        )
        return await self._request(method, spec.Queue.DeleteOk, nowait, timeout)

    # ------------------------------------------------------------ basic

    async def basic_qos(
        self,
        prefetch_size: int | None = 0,
        prefetch_count: int | None = 0,
        global_: bool = False,
        timeout: float | None = None,
    ) -> spec.Basic.QosOk:
        """Limit unacknowledged deliveries (per consumer, or per channel with ``global_``).

        None stands for 0 (no limit), as in aiormq.
        """
        method = spec.Basic.Qos(
            prefetch_size=prefetch_size or 0, prefetch_count=prefetch_count or 0, global_=global_
        )
        return await self._call(method, (spec.Basic.QosOk,), timeout)  # type: ignore[no-any-return]

    async def basic_consume(
        self,
        queue: str,
        consumer_callback: ConsumerCallback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: str | None = None,
        timeout: float | None = None,
        *,
        message_factory: MessageFactory = DeliveredMessage,
    ) -> spec.Basic.ConsumeOk:
        """Start a consumer; ``consumer_callback(message)`` gets each delivery in order.

        The callback may be a plain function or a coroutine function.

        :param message_factory: what makes the ``message`` of each delivery,
            called with its ``(delivery, properties, body, channel)``: a
            :class:`DeliveredMessage` unless given (the aio-pika API's
            ``Queue.consume`` makes its ``IncomingMessage`` here directly).
        """
        if consumer_tag and consumer_tag in self._consumers:
            # caught here, as aiormq does: the broker would close the channel
            raise DuplicateConsumerTag(530, f"consumer tag {consumer_tag!r} is in use")
        tag = consumer_tag or f"amqpfast.{self.number}.{next(_tag_counter)}"
        method = spec.Basic.Consume(
            queue=queue,
            consumer_tag=tag,
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
        )

        def register(ok: spec.Basic.ConsumeOk) -> None:
            # Deliveries may follow ConsumeOk in the same read: the consumer
            # must be in place before they are dispatched.
            registered = ok.consumer_tag or tag
            self._consumers[registered] = (consumer_callback, message_factory)
            # a tag used again is a new consumer
            self._requeue_for.discard(registered)
            self._dropping_for.discard(registered)
            if not no_ack:
                self._acking_consumers.add(registered)

        return await self._call(  # type: ignore[no-any-return]
            method, (spec.Basic.ConsumeOk,), timeout, on_reply=register
        )

    async def basic_cancel(
        self, consumer_tag: str, nowait: bool = False, timeout: float | None = None
    ) -> spec.Basic.CancelOk | None:
        """Stop a consumer."""
        method = spec.Basic.Cancel(consumer_tag=consumer_tag, nowait=nowait)
        if nowait:
            self._send_async(method)
            self._forget_consumer(consumer_tag, deliveries_may_follow=True)
            return None
        confirmed = False
        try:
            result = await self._call(method, (spec.Basic.CancelOk,), timeout)
            confirmed = True
            return result  # type: ignore[no-any-return]
        finally:
            # after CancelOk nothing more comes for this consumer
            self._forget_consumer(consumer_tag, deliveries_may_follow=not confirmed)

    def _forget_consumer(self, consumer_tag: str, deliveries_may_follow: bool) -> None:
        self._consumers.pop(consumer_tag, None)
        if not deliveries_may_follow or self._closed:
            self._acking_consumers.discard(consumer_tag)
        elif consumer_tag in self._acking_consumers:
            self._acking_consumers.discard(consumer_tag)
            self._requeue_for.add(consumer_tag)
        else:
            self._dropping_for.add(consumer_tag)

    def _on_broker_cancel(self, cancel: spec.Basic.Cancel) -> None:
        consumer_tag = cancel.consumer_tag or ""
        log.info("channel %d: the broker cancelled consumer %r", self.number, consumer_tag)
        self._forget_consumer(consumer_tag, deliveries_may_follow=False)
        for callback in list(self.on_cancel_callbacks):
            self._runner.call(callback, consumer_tag)
        for frame_callback in list(self.on_consumer_cancel_callbacks):
            self._runner.call(frame_callback, cancel)

    async def basic_get(
        self, queue: str = "", no_ack: bool = False, timeout: float | None = None
    ) -> DeliveredMessage:
        """Fetch one message; an empty queue gives a message whose delivery is Basic.GetEmpty."""
        method = spec.Basic.Get(queue=queue, no_ack=no_ack)
        result = await self._call(method, (DeliveredMessage, spec.Basic.GetEmpty), timeout)
        if isinstance(result, spec.Basic.GetEmpty):
            return DeliveredMessage(result, BasicProperties(), b"", self)
        return result  # type: ignore[no-any-return]

    def basic_ack(
        self, delivery_tag: int, multiple: bool = False, wait: bool = True
    ) -> Awaitable[None]:
        """Acknowledge a delivery (sent with the next write; awaiting is optional).

        ``wait`` is aiormq's; the ack is queued for the socket either way.
        """
        if self._closed:
            self._check_open()
        writer = self._writer
        writer.ack(self.number, delivery_tag, multiple)
        connection = self.connection
        # an ack during a read (its handlers ack one each) leaves with the read's
        # own write; there are no more of them than the read brought messages.
        # Else one write is due already (acks in a burst): nothing to ask.
        if not (
            connection._dispatching
            or (connection._flush_scheduled and len(writer) < FLUSH_THRESHOLD)
        ):
            connection._schedule_flush()
        return DONE

    def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> Awaitable[None]:
        """Reject one or more deliveries, requeued by default."""
        if self._closed:
            self._check_open()
        self._writer.nack(self.number, delivery_tag, multiple, requeue)
        self.connection._schedule_flush()
        return DONE

    def basic_reject(
        self, delivery_tag: int, requeue: bool = True, wait: bool = True
    ) -> Awaitable[None]:
        """Reject one delivery, requeued by default."""
        if self._closed:
            self._check_open()
        self._writer.reject(self.number, delivery_tag, requeue)
        self.connection._schedule_flush()
        return DONE

    async def basic_recover(
        self, requeue: bool = False, timeout: float | None = None, *, nowait: bool = False
    ) -> spec.Basic.RecoverOk | None:
        """Redeliver the unacknowledged messages (``nowait``: Basic.RecoverAsync)."""
        if nowait:
            self._send_async(spec.Basic.RecoverAsync(requeue=requeue))
            return None
        return await self._call(  # type: ignore[no-any-return]
            spec.Basic.Recover(requeue=requeue), (spec.Basic.RecoverOk,), timeout
        )

    # ------------------------------------------------------------ publishing

    async def basic_publish(
        self,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: BasicProperties | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        timeout: float | None = None,
        wait: bool = True,
    ) -> Any:
        """Publish a message.

        In confirm mode this waits for the broker's Basic.Ack and returns it
        (pamqp's ``Basic.Ack``; or, for a mandatory message that came back,
        the returned :class:`DeliveredMessage`); without confirms it returns
        None once the message is queued for the socket. ``wait`` is aiormq's
        and changes nothing here: confirms are awaited either way. A message
        without a ``message_id`` goes out with a random UUID4 (hex), as in
        aiormq (written into the frame: ``properties`` are not changed).

        :param timeout: seconds for all of it: waiting until the message may
            go out (see :meth:`publish`) and the confirm.
        :raises DeliveryError: the broker answered Basic.Nack.
        :raises PublishError: a mandatory message came back and the channel
            was opened with ``on_return_raises``.
        :raises ChannelInvalidStateError: the channel is closed.
        :raises TimeoutError: not sent and confirmed within ``timeout``.
        """
        sent = self.publish(body, exchange, routing_key, properties, mandatory, immediate, timeout)
        if sent is None:
            return None
        try:
            return await sent
        except asyncio.CancelledError as cancelled:
            raise self.close_error(cancelled) from cancelled

    def publish(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: BasicProperties | MessageBase | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        timeout: float | None = None,
    ) -> Awaitable[Any] | None:
        """The one publish path (:meth:`basic_publish`, ``Exchange.publish``).

        Returns None when the message is queued for the socket and there is
        nothing to wait for (no confirms); a :class:`Confirmation` when it is
        queued and its confirm is due; else a coroutine of the result
        (either turns a cancel that comes with the channel's close into its
        error, by :meth:`close_error`, as :meth:`basic_publish` does): the
        message may have to wait before it
        goes out, while the socket is not draining, the broker blocks the
        connection (Connection.Blocked, a resource alarm) or has flow off on
        the channel (Channel.Flow). ``timeout`` covers those waits and the
        confirm. A timeout leaves the channel usable (a confirm that comes
        later is ignored).

        ``properties`` may be a :class:`~amqpfast.codec.MessageBase` (an
        ``amqpfast.Message``): the writer encodes its fields as the properties.

        Not a coroutine function, for speed: on the common path the call
        itself queues the message, with no coroutine made.
        """
        connection = self.connection
        protocol = connection._protocol
        if (
            timeout is not None
            or self._closed
            or not self.flow_active
            or connection._blocked is not None
            or (protocol is not None and protocol.paused)
        ):
            return self._publish_when_sendable(
                body, exchange, routing_key, properties, mandatory, immediate, timeout
            )
        # A message without a message_id gets a random UUID4 (hex), as in
        # aiormq: the writer puts it in the frame, the properties stay as
        # they are. A mandatory publish awaiting its confirm is found by it
        # when the message comes back.
        confirm_mode = self.confirm_mode
        message_id = self._writer.publish(
            self.number,
            body,
            exchange,
            routing_key,
            properties,
            mandatory,
            immediate,
            True,
            mandatory and confirm_mode,
        )
        # a write is due already (the common case in a burst): nothing to ask
        if not (connection._flush_scheduled and len(self._writer) < FLUSH_THRESHOLD):
            connection._schedule_flush()
        if not confirm_mode:
            return None
        # written (it encoded): now it is tracked
        tag = self._delivery_tag = self._delivery_tag + 1
        future = Confirmation(loop=self.loop)
        future._channel = self
        future._waiting = None
        self._confirms[tag] = future
        if message_id is not None:  # mandatory: it has one, given or made
            self._tag_keys[tag] = (message_id, exchange, routing_key)
        return future

    async def _publish_when_sendable(
        self,
        body: bytes,
        exchange: str,
        routing_key: str,
        properties: BasicProperties | MessageBase | None,
        mandatory: bool,
        immediate: bool,
        timeout: float | None,
    ) -> Any:
        try:
            # not wait_for: a cancel that comes with the confirm's error must stay visible
            async with asyncio.timeout(timeout):
                await self._until_sendable()
                # sendable now, nothing awaited since: publish() sends it at once
                sent = self.publish(body, exchange, routing_key, properties, mandatory, immediate)
                return None if sent is None else await sent
        except asyncio.CancelledError as cancelled:
            raise self.close_error(cancelled) from cancelled

    async def _until_sendable(self) -> None:
        # each wait ends when its condition ends or the channel or
        # connection closes; then everything is looked at again
        connection = self.connection
        while True:
            if self._closed:
                self._check_open()
            protocol = connection._protocol
            if protocol is not None and protocol.paused:
                await connection._drain()
            elif connection._blocked is not None:
                await asyncio.shield(connection._blocked)
            elif self._flow_resumed is not None:
                await asyncio.shield(self._flow_resumed)
            else:
                return

    def _set_flow(self, active: bool) -> None:
        self.flow_active = active
        resumed = self._flow_resumed
        if active:
            self._flow_resumed = None
            if resumed is not None and not resumed.done():
                resumed.set_result(None)
        elif resumed is None:
            self._flow_resumed = self.loop.create_future()

    def close_error(self, cancelled: asyncio.CancelledError) -> BaseException:
        """What a handler cancelled by the close of its channel should raise: the close's error.

        The close cancels the handlers with its error as the message; only
        that cancel is taken back, one from elsewhere stays a CancelledError
        (returned as it is). Used where a wait on the channel is cancelled::

            except asyncio.CancelledError as cancelled:
                raise channel.close_error(cancelled) from cancelled
        """
        closing = self._closing
        reason = cancelled.args[0] if cancelled.args else None
        task = asyncio.current_task()
        if (
            isinstance(reason, Exception)
            and closing.done()
            and not closing.cancelled()
            and closing.exception() is reason
            and task is not None
            and task.cancelling() == 1
        ):
            task.uncancel()
            return reason
        return cancelled

    def _returned_tag(self, returned: Any, message_id: str) -> int | None:
        # A Basic.Return carries the message_id back; publishes that share
        # one (the caller gave it) are told apart by exchange and routing
        # key, oldest first. The broker returns a message before it confirms
        # it, and confirms oldest first: the search ends near the front.
        route = (message_id, returned.exchange, returned.routing_key)
        first = None
        for tag, key in self._tag_keys.items():
            if key == route:
                return tag
            if first is None and key[0] == message_id:
                first = tag
        return first

    def _confirmed(self, tag: int) -> Confirmation | None:
        if self._tag_keys:
            self._tag_keys.pop(tag, None)
        return self._confirms.pop(tag, None)

    def _on_ack(self, frame: BasicAck) -> None:
        # the publishes get pamqp's Basic.Ack (aiormq code checks for it): one per frame
        ack = _new_ack(_PamqpAck)
        ack.delivery_tag = frame.delivery_tag
        ack.multiple = frame.multiple
        settled: list[Confirmation] = []
        if not ack.multiple:
            future = self._confirmed(ack.delivery_tag)
            if future is not None and not future.done():
                _settle(future, ack)
                if future._waiting is not None:
                    settled.append(future)
        else:
            # one frame confirms a run of tags: the common case, kept tight
            confirms = self._confirms
            marked = self._tag_keys
            last = ack.delivery_tag
            if last > self._delivery_tag:
                # no tag past the last publish exists: a broken peer's 2**64 - 1
                # must not make this loop run for ever
                last = self._delivery_tag
            for tag in range(self._confirm_floor, last + 1):
                if marked:
                    marked.pop(tag, None)
                future = confirms.pop(tag, None)
                if future is not None and not future.done():
                    _settle(future, ack)
                    if future._waiting is not None:
                        settled.append(future)
            if last >= self._confirm_floor:
                self._confirm_floor = last + 1
        if len(settled) > 1:
            self.loop.call_soon(_run_done_callbacks, settled)
        elif settled:  # one: scheduled as a Future would
            settled[0]._schedule_waiting()

    def _on_nack(self, frame: BasicNack) -> None:
        nack = _as_pamqp(frame, _PamqpNack)
        # as for Basic.Ack: no tag past the last publish (nor a loop to 2**64)
        last = min(nack.delivery_tag, self._delivery_tag)
        tags = range(self._confirm_floor, last + 1) if nack.multiple else (nack.delivery_tag,)
        for tag in tags:
            future = self._confirmed(tag)
            if future is not None and not future.done():
                future.set_exception(DeliveryError(None, nack))
        if nack.multiple:
            self._confirm_floor = max(self._confirm_floor, last + 1)

    def _on_return(self, message: DeliveredMessage) -> None:
        key = message.properties.message_id
        tag = self._returned_tag(message.delivery, key) if key else None
        if tag is not None:
            del self._tag_keys[tag]
            # The publish ends here: with PublishError, or with the returned
            # message as its result; the Basic.Ack that follows finds nothing.
            future = self._confirms.pop(tag, None)
            if future is not None and not future.done():
                if self.on_return_raises:
                    future.set_exception(PublishError(message, message.delivery))
                else:
                    future.set_result(message)
        if not self.on_return_callbacks:
            log.warning("message returned: %r", message)
        for callback in list(self.on_return_callbacks):
            self._runner.call(callback, message)

    # ------------------------------------------------------------ confirm, tx

    async def confirm_select(
        self, nowait: bool = False, timeout: float | None = None
    ) -> spec.Confirm.SelectOk | None:
        """Put the channel in publisher-confirm mode."""
        if nowait:
            self._send_async(spec.Confirm.Select(nowait=True))
            self.confirm_mode = True
            return None
        result = await self._call(spec.Confirm.Select(), (spec.Confirm.SelectOk,), timeout)
        self.confirm_mode = True
        return result  # type: ignore[no-any-return]

    async def confirm_delivery(
        self, nowait: bool = False, timeout: float | None = None
    ) -> spec.Confirm.SelectOk | None:
        """aiormq's name for :meth:`confirm_select`."""
        return await self.confirm_select(nowait, timeout)

    async def tx_select(self, timeout: float | None = None) -> spec.Tx.SelectOk:
        """Put the channel in transaction mode."""
        return await self._call(spec.Tx.Select(), (spec.Tx.SelectOk,), timeout)  # type: ignore[no-any-return]

    async def tx_commit(self, timeout: float | None = None) -> spec.Tx.CommitOk:
        """Commit the current transaction."""
        return await self._call(spec.Tx.Commit(), (spec.Tx.CommitOk,), timeout)  # type: ignore[no-any-return]

    async def tx_rollback(self, timeout: float | None = None) -> spec.Tx.RollbackOk:
        """Roll the current transaction back."""
        return await self._call(spec.Tx.Rollback(), (spec.Tx.RollbackOk,), timeout)  # type: ignore[no-any-return]
