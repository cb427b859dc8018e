"""Remote procedure calls over RabbitMQ.

A callee registers a function under a method name: a queue of that name
(dead-lettering to the ``rpc.dlx`` headers exchange) and a consumer on it. A
caller publishes the keyword arguments to that queue with ``reply_to`` and
``correlation_id`` set and waits on a future; the callee publishes the
result, or the exception, to the caller's result queue. A call that expires
in the method queue is dead-lettered back to the caller (its ``From`` header
selects the result queue) and fails there with TimeoutError.

:class:`RPC` pickles, as aio-pika's does: whoever can publish to its queues
can run code in the callee or the caller. :class:`JsonRPC` speaks JSON.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from ..abc import ConsumerTag, DeliveryMode, ExchangeType
from ..codec import new_message_id
from ..exceptions import ChannelClosed, MessageProcessError
from ..message import IncomingMessage, Message
from ..tools import ensure_awaitable
from .base import Base, CallbackType, Proxy

if TYPE_CHECKING:
    from ..channel import Channel
    from ..exchange import Exchange
    from ..queue import Queue

log = logging.getLogger(__name__)

__all__ = ["RPC", "JsonRPC", "JsonRPCError", "RPCException", "RPCMessageType"]


class RPCException(RuntimeError):
    """The callee sent back an error that is not an exception object."""


class RPCMessageType(str, Enum):  # noqa: UP042 - str() as aio-pika's gives
    """The ``type`` property of the RPC messages."""

    ERROR = "error"
    RESULT = "result"
    CALL = "call"


# the values, looked up once (an Enum's value is a Python-level property)
_RESULT = RPCMessageType.RESULT.value
_ERROR = RPCMessageType.ERROR.value
_CALL = RPCMessageType.CALL.value
_UTC = datetime.UTC


def _uuid4_text() -> str:
    # a random UUID4 in its usual text form, from the codec's generator
    # (uuid.uuid4() costs several times as much)
    hex_id = new_message_id()
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"


# aio-pika kept this old name for programs written for its 6.x
RPCMessageTypes = RPCMessageType


class RPC(Base):
    """Remote procedure calls: :meth:`register` functions, :meth:`call` them from anywhere.

    ::

        rpc = await RPC.create(channel)

        async def multiply(*, x, y):  # keyword arguments only
            return x * y

        await rpc.register("multiply", multiply, auto_delete=True)
        assert await rpc.proxy.multiply(x=2, y=3) == 6
        assert await rpc.call("multiply", {"x": 2, "y": 3}) == 6

    Payloads, results and exceptions are pickled, and unpickling runs code
    the data names: whoever can publish to a method queue can run code in
    the callee, and whoever can publish to a result queue (directly, or
    through the ``rpc.dlx`` exchange) can run code in the caller. Use
    :class:`JsonRPC` unless everyone with write access to the virtual host
    is trusted.

    :param channel: an open channel.
    :param host_exceptions: also log, on the callee, the exceptions its
        functions raise (they go back to the caller either way).
    """

    __slots__ = (
        "channel",
        "consumer_tags",
        "direct_reply_to",
        "dlx_exchange",
        "futures",
        "host_exceptions",
        "loop",
        "proxy",
        "queues",
        "result_consumer_tag",
        "result_queue",
        "routes",
        "rpc_exchange",
        "_funcs",
    )

    DLX_NAME = "rpc.dlx"
    DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"  # RabbitMQ's pseudo-queue for replies
    DELIVERY_MODE = DeliveryMode.NOT_PERSISTENT

    result_queue: Queue
    result_consumer_tag: ConsumerTag
    dlx_exchange: Exchange
    rpc_exchange: Exchange | None

    def __init__(self, channel: Channel, host_exceptions: bool = False) -> None:
        self.channel = channel
        self.loop = asyncio.get_running_loop()
        self.proxy = Proxy(self.call)
        self.futures: dict[str, asyncio.Future[Any]] = {}
        self.routes: dict[str, Callable[..., Any]] = {}
        self.queues: dict[Callable[..., Any], Queue] = {}
        self.consumer_tags: dict[Callable[..., Any], ConsumerTag] = {}
        self.host_exceptions = host_exceptions
        # registered function -> routing key, to unregister by the function given
        self._funcs: dict[Callable[..., Any], str] = {}
        self.direct_reply_to = False

    def __repr__(self) -> str:
        queue = getattr(self, "result_queue", None)
        return f"<{type(self).__name__} result_queue={queue.name if queue else None!r}>"

    # ------------------------------------------------------------ setting up

    @classmethod
    async def create(
        cls, channel: Channel, *, host_exceptions: bool | None = None, **kwargs: Any
    ) -> Self:
        """Make an RPC on ``channel`` and :meth:`initialize` it.

        :param channel: an open channel.
        :param host_exceptions: log the callee's exceptions (None: the
            class's default, False).
        :param kwargs: what :meth:`initialize` takes (``auto_delete``,
            ``durable``, ``exchange`` and :meth:`Channel.declare_queue`'s
            arguments for the result queue).
        """
        rpc = cls(channel)
        if host_exceptions is not None:
            rpc.host_exceptions = host_exceptions
        await rpc.initialize(**kwargs)
        return rpc

    async def initialize(
        self, auto_delete: bool = True, durable: bool = False, exchange: str = "", **kwargs: Any
    ) -> None:
        """Declare the result queue and the dead-letter exchange, and consume results.

        Does nothing when it was done already.

        :param auto_delete: the result queue goes when its consumer does.
        :param durable: the result queue (and ``exchange``) survive a broker restart.
        :param exchange: route calls through this direct exchange (routing
            key ``"<exchange>::<method>"``) instead of the default exchange.
        :param kwargs: more :meth:`Channel.declare_queue` arguments for the
            result queue; and amqpfast's ``direct_reply_to=True`` (not in
            aio-pika): replies come through RabbitMQ's direct reply-to
            (``amq.rabbitmq.reply-to``) instead of a result queue, so no
            queue is declared and a reply skips the queue on its way;
            ``call(expiration=...)`` is then a timeout on the whole call (a
            dead-lettered call cannot find its way back).
        """
        if hasattr(self, "result_queue"):
            return
        direct_reply_to = bool(kwargs.pop("direct_reply_to", False))
        self.rpc_exchange = (
            await self.channel.declare_exchange(
                exchange, type=ExchangeType.DIRECT, auto_delete=True, durable=durable
            )
            if exchange
            else None
        )
        self.dlx_exchange = await self.channel.declare_exchange(
            self.DLX_NAME, type=ExchangeType.HEADERS, auto_delete=True
        )
        if direct_reply_to:
            # consumed without acks on the channel that publishes the calls,
            # as RabbitMQ requires; the broker names each call's reply address
            result_queue = await self.channel.get_queue(self.DIRECT_REPLY_TO, ensure=False)
            self.result_consumer_tag = await result_queue.consume(
                self.on_result_message, no_ack=True
            )
        else:
            result_queue = await self.channel.declare_queue(
                None, auto_delete=auto_delete, durable=durable, **kwargs
            )
            # expired calls come back through the DLX by the caller's "From" header
            await result_queue.bind(
                self.dlx_exchange, "", arguments={"From": result_queue.name, "x-match": "any"}
            )
            self.result_consumer_tag = await result_queue.consume(
                self.on_result_message, exclusive=True, no_ack=True
            )
        self.direct_reply_to = direct_reply_to
        self.result_queue = result_queue
        self.channel.close_callbacks.add(self.on_close)
        self.channel.return_callbacks.add(self.on_message_returned)

    async def close(self) -> None:
        """Stop: unregister every function, fail the pending calls, delete the result queue.

        Pending calls raise CancelledError, those made while it closes
        too. Closing twice only logs a warning.
        """
        if not hasattr(self, "result_queue"):
            log.warning("RPC already closed")
            return
        result_queue = self.result_queue
        self.channel.close_callbacks.discard(self.on_close)
        self.channel.return_callbacks.discard(self.on_message_returned)
        self._cancel_calls()
        try:
            if not self.channel.is_closed:
                for func in list(self.consumer_tags):
                    await self.unregister(func)
                await result_queue.cancel(self.result_consumer_tag)
                if not self.direct_reply_to:  # the pseudo-queue is not ours to delete
                    # deleting the queue drops its DLX binding too; a late reply
                    # left in it must not make the delete fail
                    await result_queue.delete(if_unused=False, if_empty=False)
        finally:
            # again: calls made while the broker answered are pending too
            self._cancel_calls()
            self.routes.clear()
            self.queues.clear()
            self.consumer_tags.clear()
            self._funcs.clear()
            del self.result_queue
            del self.result_consumer_tag
            del self.dlx_exchange
            if self.rpc_exchange:
                del self.rpc_exchange

    def _cancel_calls(self) -> None:
        for future in list(self.futures.values()):
            future.cancel()  # its done callback forgets it

    def on_close(self, channel: Channel | None, exc: BaseException | None = None) -> None:
        """Fail the pending calls: the channel closed.

        :param channel: the channel.
        :param exc: why it closed (None: closed by the application).
        """
        log.debug("failing pending RPC calls: channel closed (%r)", exc)
        for future in list(self.futures.values()):
            if not future.done():
                future.set_exception(exc or ChannelClosed(0, "the RPC channel was closed"))

    # ------------------------------------------------------------ the caller

    def create_future(self) -> tuple[asyncio.Future[Any], str]:
        """A future for a call's result and the correlation id that finds it."""
        future: asyncio.Future[Any] = self.loop.create_future()
        correlation_id = _uuid4_text()
        self.futures[correlation_id] = future
        future.add_done_callback(partial(self._forget, correlation_id))
        return future, correlation_id

    def _forget(self, correlation_id: str, future: asyncio.Future[Any]) -> None:
        self.futures.pop(correlation_id, None)

    def _format_routing_key(self, method_name: str) -> str:
        if self.rpc_exchange:
            return f"{self.rpc_exchange.name}::{method_name}"
        return method_name

    async def call(
        self,
        method_name: str,
        kwargs: dict[str, Any] | None = None,
        *,
        expiration: float | None = None,
        priority: int = 5,
        delivery_mode: DeliveryMode = DELIVERY_MODE,
    ) -> Any:
        """Call a remote method and wait for its result.

        There is no timeout of its own: wrap it in ``asyncio.wait_for`` (or
        ``asyncio.timeout``) to give up on a slow callee.

        :param method_name: the name it was registered under.
        :param kwargs: its keyword arguments.
        :param expiration: seconds the call may wait in the method queue
            for a callee to take it; then it fails with TimeoutError.
        :param priority: the call message's priority.
        :param delivery_mode: the call message's delivery mode (the reply
            uses the same).
        :returns: what the remote function returned.
        :raises TimeoutError: the call expired before a callee took it.
        :raises MessageProcessError: no queue for the method (the broker returned the call).
        :raises asyncio.CancelledError: :meth:`close` was called meanwhile.
        :raises Exception: what the remote function raised.
        """
        # as create_future() does, but the finally below forgets the call
        # (no done callback, and no loop turn for it, per call)
        future: asyncio.Future[Any] = self.loop.create_future()
        correlation_id = _uuid4_text()
        self.futures[correlation_id] = future
        try:
            message = await self.serialize_message(
                payload=kwargs or {},
                message_type=RPCMessageType.CALL,
                correlation_id=correlation_id,
                delivery_mode=delivery_mode,
                reply_to=self.result_queue.name,
                headers={"From": self.result_queue.name},
                priority=priority,
            )
            if expiration is not None:
                message.expiration = expiration
            routing_key = self._format_routing_key(method_name)
            if log.isEnabledFor(logging.DEBUG):  # one call instead of two per call
                log.debug("calling %s(%r)", routing_key, kwargs)
            exchange = self.rpc_exchange or self.channel.default_exchange
            await exchange.publish(message, routing_key=routing_key, mandatory=True)
            if expiration is not None and self.direct_reply_to:
                try:
                    return await asyncio.wait_for(future, expiration)
                except TimeoutError:
                    raise TimeoutError("Message timed-out", message) from None
            return await future
        finally:
            self.futures.pop(correlation_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved, e.g. failed by on_close while publishing

    def on_message_returned(self, channel: Channel | None, message: IncomingMessage) -> None:
        """Fail the call whose message the broker returned (no queue for its method).

        :param channel: the channel.
        :param message: the returned call.
        """
        if message.correlation_id is None:
            log.warning("Message without correlation_id was returned: %r", message)
            return
        future = self.futures.pop(message.correlation_id, None)
        if future is None or future.done():
            log.warning("Unknown message was returned: %r", message)
            return
        future.set_exception(MessageProcessError("Message has been returned", message))

    async def on_result_message(self, message: IncomingMessage) -> None:
        """Resolve the call a reply (or an expired call) belongs to.

        :param message: a message from the result queue.
        """
        if message.correlation_id is None:
            log.warning("Message without correlation_id was received: %r", message)
            return
        future = self.futures.pop(message.correlation_id, None)
        if future is None:
            log.warning("Unknown message: %r", message)
            return
        if future.done():  # the caller gave up meanwhile
            return
        try:
            payload = await self.deserialize_message(message)
        except Exception as error:
            log.error("failed to deserialize the reply %r", message)
            future.set_exception(error)
            return
        message_type = message.type
        if message_type == _RESULT:
            future.set_result(payload)
        elif message_type == _ERROR:
            if not isinstance(payload, Exception):
                payload = RPCException("Wrapped non-exception object", payload)
            future.set_exception(payload)
        elif message_type == _CALL:
            # our own call, dead-lettered: it expired before a callee took it
            future.set_exception(TimeoutError("Message timed-out", message))
        else:
            future.set_exception(RuntimeError(f"Unknown message type {message.type!r}"))

    # ------------------------------------------------------------ the callee

    async def on_call_message(self, method_name: str, message: IncomingMessage) -> None:
        """Run a registered function for a call and publish its result (or exception).

        :param method_name: the method the call is for.
        :param message: the call.
        """
        routing_key = self._format_routing_key(method_name)
        func = self.routes.get(routing_key)
        if func is None:
            # unregistered meanwhile: let another callee have it
            log.warning("method %r not registered in %r: call requeued", method_name, self)
            await message.nack(requeue=True)
            return
        try:
            payload = await self.deserialize_message(message)
            result: Any = await self.execute(func, payload)
            message_type = RPCMessageType.RESULT
        except Exception as error:
            result = self.serialize_exception(error)
            message_type = RPCMessageType.ERROR
            if self.host_exceptions is True:
                log.exception("RPC method %r raised", method_name)

        if not message.reply_to:
            log.info('RPC message without "reply_to": the result of %r is lost', message)
            await message.ack()
            return

        try:
            reply = await self.serialize_message(
                payload=result,
                message_type=message_type,
                correlation_id=message.correlation_id,
                delivery_mode=message.delivery_mode,
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # the result would not serialize: the caller gets that error instead
            reply = await self.serialize_message(
                payload=error,
                message_type=RPCMessageType.ERROR,
                correlation_id=message.correlation_id,
                delivery_mode=message.delivery_mode,
            )

        try:
            await self.channel.default_exchange.publish(reply, message.reply_to, mandatory=False)
        except Exception as error:
            log.error(
                "failed to send reply %r: %s: %s", reply, type(error).__name__, error, exc_info=True
            )
            await message.reject(requeue=False)
            return
        await message.ack()

    def serialize_exception(self, exception: Exception) -> Any:
        """What to send back for an exception (the exception itself, pickled).

        :param exception: what the function raised.
        """
        return exception

    async def execute(self, func: CallbackType[Any], payload: dict[str, Any]) -> Any:
        """Run a registered function with the call's keyword arguments (override to change).

        :param func: the function (a coroutine function).
        :param payload: the deserialized call body.
        """
        return await func(**payload)

    async def deserialize_message(self, message: IncomingMessage) -> Any:
        """The payload of a call or reply.

        :param message: the message received.
        """
        return self.deserialize(message.body)

    async def serialize_message(
        self,
        payload: Any,
        message_type: RPCMessageType,
        correlation_id: str | None,
        delivery_mode: DeliveryMode,
        **kwargs: Any,
    ) -> Message:
        """The message for a call or a reply.

        :param payload: the keyword arguments, result or exception.
        :param message_type: call, result or error.
        :param correlation_id: the call's id.
        :param delivery_mode: persistent or not.
        :param kwargs: more :class:`~amqpfast.Message` properties.
        """
        return Message(
            self.serialize(payload),
            content_type=self.CONTENT_TYPE,
            correlation_id=correlation_id,
            delivery_mode=delivery_mode,
            timestamp=datetime.datetime.now(_UTC),
            type=message_type._value_,  # .value is a Python-level property
            **kwargs,
        )

    async def register(self, method_name: str, func: Callable[..., Any], **kwargs: Any) -> Any:
        """Serve ``func`` under ``method_name``: declare the method queue and consume it.

        :param method_name: the name callers use (also the queue's name).
        :param func: the function, taking keyword arguments only (a
            coroutine function or a plain one).
        :param kwargs: more :meth:`Channel.declare_queue` arguments for the
            method queue (``auto_delete`` ...); its ``x-dead-letter-exchange``
            is always the RPC's.
        :raises RuntimeError: ``func`` is registered already, or the method name is taken.
        """
        awaitable = ensure_awaitable(func)  # a plain function: DeprecationWarning
        routing_key = self._format_routing_key(method_name)
        if func in self.consumer_tags:
            raise RuntimeError("Function already registered")
        if routing_key in self.routes:
            raise RuntimeError(f"Method name already used for {self.routes[routing_key]!r}")

        arguments = dict(kwargs.pop("arguments", None) or {})
        arguments["x-dead-letter-exchange"] = self.DLX_NAME
        kwargs["arguments"] = arguments
        queue = await self.channel.declare_queue(routing_key, **kwargs)
        if self.rpc_exchange:
            await queue.bind(self.rpc_exchange, routing_key)

        # checked again: another register() may have won while we declared
        if func in self.consumer_tags or routing_key in self.routes:
            raise RuntimeError(f"{method_name!r} was registered meanwhile")
        self.routes[routing_key] = awaitable
        self.queues[func] = queue
        self._funcs[func] = routing_key
        try:
            self.consumer_tags[func] = await queue.consume(
                partial(self.on_call_message, method_name)
            )
        except BaseException:
            del self.routes[routing_key], self.queues[func], self._funcs[func]
            raise

    async def unregister(self, func: Callable[..., Any]) -> None:
        """Stop serving ``func`` (its consumer is cancelled; the queue stays
        unless it was declared ``auto_delete``).

        :param func: the function given to :meth:`register`; not registered: nothing happens.
        """
        if func not in self.consumer_tags:
            return
        consumer_tag = self.consumer_tags.pop(func)
        queue = self.queues.pop(func)
        routing_key = self._funcs.pop(func)
        try:
            await queue.cancel(consumer_tag)
        finally:
            self.routes.pop(routing_key, None)


class JsonRPCError(RuntimeError):
    """A :class:`JsonRPC` call failed; ``args[1]`` is the error the callee sent."""


class JsonRPC(RPC):
    """An :class:`RPC` that speaks JSON (``application/json``).

    A function's exception comes back as :class:`JsonRPCError` whose second
    argument is ``{"error": {"type": ..., "message": ..., "args": [...]}}``;
    a result JSON cannot represent is sent as its ``repr()``.
    """

    SERIALIZER = json
    CONTENT_TYPE = "application/json"

    def serialize(self, data: Any) -> bytes:
        """``data`` as UTF-8 JSON (what JSON cannot represent: its repr()).

        :param data: what to send.
        """
        return json.dumps(data, ensure_ascii=False, default=repr).encode()

    def serialize_exception(self, exception: Exception) -> Any:
        """An exception as a JSON object: its type name, repr and args.

        :param exception: what the function raised.
        """
        return {
            "error": {
                "type": type(exception).__name__,
                "message": repr(exception),
                "args": exception.args,
            }
        }

    async def deserialize_message(self, message: IncomingMessage) -> Any:
        """The payload; an error reply becomes a :class:`JsonRPCError`.

        :param message: the message received.
        """
        payload = await super().deserialize_message(message)
        if message.type == RPCMessageType.ERROR:
            payload = JsonRPCError("RPC exception", payload)
        return payload
