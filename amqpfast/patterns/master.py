"""Master/worker: a master hands tasks to a queue, workers consume and run them.

Each task is one persistent message whose body is the task's keyword
arguments (pickled, or JSON with :class:`JsonMaster`). A worker acks a task
that ran, rejects one that raised (requeued by default), and obeys
:class:`NackMessage` and :class:`RejectMessage` raised by the task function.

:class:`Master` unpickles task bodies, as aio-pika's does: whoever can
publish to a task queue can run code in the worker. Use :class:`JsonMaster`
(or :class:`CompressedJsonMaster`) unless every publisher is trusted.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ..abc import ConsumerTag, DeliveryMode
from ..message import IncomingMessage, Message
from ..tools import ensure_awaitable
from .base import Base, CallbackType, Proxy

if TYPE_CHECKING:
    from ..channel import Channel
    from ..exchange import Exchange
    from ..queue import Queue

log = logging.getLogger(__name__)

__all__ = [
    "CompressedJsonMaster",
    "DecompressionLimitError",
    "JsonMaster",
    "Master",
    "MessageProcessingError",
    "NackMessage",
    "RejectMessage",
    "Worker",
]


class MessageProcessingError(Exception):
    """Raised by a task function to settle its message its own way."""


class NackMessage(MessageProcessingError):
    """Raise in a task function to nack its message.

    :param requeue: put the message back in the queue (else it is dropped
        or dead-lettered).
    """

    def __init__(self, requeue: bool = False) -> None:
        super().__init__(requeue)
        self.requeue = requeue


class RejectMessage(MessageProcessingError):
    """Raise in a task function to reject its message.

    :param requeue: put the message back in the queue (else it is dropped
        or dead-lettered).
    """

    def __init__(self, requeue: bool = False) -> None:
        super().__init__(requeue)
        self.requeue = requeue


class DecompressionLimitError(RejectMessage):
    """A compressed body expands beyond the allowed size (a "zip bomb"?).

    Raised by :meth:`CompressedJsonMaster.deserialize`, before more than
    ``limit`` bytes are held; a worker rejects the task without requeueing
    it (dead-lettered if its queue has a dead-letter exchange).

    :param limit: the largest decompressed size allowed, in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(requeue=False)
        self.args = (f"the body decompresses to more than {limit} bytes",)
        self.limit = limit


class Worker:
    """A consumer started by :meth:`Master.create_worker`.

    :param queue: the task queue it consumes.
    :param consumer_tag: its consumer tag.
    :param loop: the event loop it runs on.
    """

    __slots__ = ("consumer_tag", "loop", "queue")

    def __init__(
        self, queue: Queue, consumer_tag: ConsumerTag, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.queue = queue
        self.consumer_tag = consumer_tag
        self.loop = loop

    def __repr__(self) -> str:
        return f"<{type(self).__name__} queue={self.queue.name!r} ctag={self.consumer_tag!r}>"

    def close(self) -> Awaitable[None]:
        """Stop consuming (the queue stays).

        The cancellation starts at once, awaited or not; the Task returned
        finishes when the broker confirmed it.
        """
        return self.loop.create_task(self._cancel())

    async def _cancel(self) -> None:
        await self.queue.cancel(self.consumer_tag)


class Master(Base):
    """Hands out tasks to workers through queues.

    Task bodies are pickled: unpickling runs code the body names, so anyone
    who can publish to a task queue can run code in its workers. Use
    :class:`JsonMaster` (or :class:`CompressedJsonMaster`) unless every
    publisher is trusted.

    On the worker side::

        master = Master(channel)
        await master.create_worker("resize", resize)  # resize(*, path, size)

    On the master side::

        await Master(channel).proxy.resize(path="a.png", size=64)

    :param channel: an open channel.
    :param requeue: requeue a task whose function raised (the default; with
        a function that always fails the task comes back forever unless
        ``reject_on_redelivered``).
    :param reject_on_redelivered: drop (or dead-letter) a task that failed
        and had been delivered before, instead of requeueing it again.
    """

    __slots__ = ("_reject_on_redelivered", "_requeue", "channel", "loop", "proxy")

    DELIVERY_MODE = DeliveryMode.PERSISTENT

    def __init__(
        self,
        channel: Channel,
        requeue: bool = True,
        reject_on_redelivered: bool = False,
    ) -> None:
        self.channel = channel
        self.loop = asyncio.get_running_loop()
        self.proxy = Proxy(self.create_task)
        self.channel.return_callbacks.add(self.on_message_returned)
        self._requeue = requeue
        self._reject_on_redelivered = reject_on_redelivered

    @property
    def exchange(self) -> Exchange:
        """The exchange tasks are published to: the channel's default exchange."""
        return self.channel.default_exchange

    @staticmethod
    def on_message_returned(channel: Channel | None, message: IncomingMessage) -> None:
        """Log a task the broker could not route (no queue of that name).

        :param channel: the channel it was published on.
        :param message: the returned message.
        """
        # aio-pika's wording, which log scrapers may look for
        log.warning("Message returned. Probably destination queue does not exists: %r", message)

    @classmethod
    async def execute(cls, func: CallbackType[Any], kwargs: Any) -> Any:
        """Run a task function with the task's keyword arguments.

        :param func: the task function (a coroutine function).
        :param kwargs: the deserialized body; anything but a dict (or an
            empty value) rejects the task without requeueing it.
        :raises RejectMessage: the body is not a dict of keyword arguments.
        """
        kwargs = kwargs or {}
        if not isinstance(kwargs, dict):
            log.error("bad kwargs %r for %r: task rejected", kwargs, func)
            raise RejectMessage(requeue=False)
        return await func(**kwargs)

    async def on_message(self, func: CallbackType[Any], message: IncomingMessage) -> None:
        """Run one task and settle its message (ack, reject or nack).

        :param func: the task function.
        :param message: the task.
        """
        async with message.process(
            requeue=self._requeue,
            reject_on_redelivered=self._reject_on_redelivered,
            ignore_processed=True,
        ):
            try:
                await self.execute(func, self.deserialize(message.body))
            except RejectMessage as error:
                if isinstance(error, DecompressionLimitError):
                    log.error("task %r rejected: %s", message, error)
                await message.reject(requeue=error.requeue)
            except NackMessage as error:
                await message.nack(requeue=error.requeue)

    async def create_queue(self, queue_name: str, **kwargs: Any) -> Queue:
        """Declare a task queue.

        :param queue_name: the queue (tasks are routed by it).
        :param kwargs: what :meth:`Channel.declare_queue` takes.
        """
        return await self.channel.declare_queue(queue_name, **kwargs)

    async def create_worker(
        self, queue_name: str, func: Callable[..., Any], **kwargs: Any
    ) -> Worker:
        """Declare a task queue and consume it: each task runs ``func(**task_kwargs)``.

        :param queue_name: the queue (the name the master sends tasks to).
        :param func: the task function, taking keyword arguments only (a
            coroutine function or a plain one).
        :param kwargs: what :meth:`Channel.declare_queue` takes (``durable`` ...).
        :returns: the :class:`Worker`; ``await worker.close()`` stops it.
        """
        queue = await self.create_queue(queue_name, **kwargs)
        consumer_tag = await queue.consume(partial(self.on_message, ensure_awaitable(func)))
        return Worker(queue, consumer_tag, self.loop)

    async def create_task(
        self,
        channel_name: str,
        kwargs: Mapping[str, Any] = MappingProxyType({}),
        **message_kwargs: Any,
    ) -> Any:
        """Send a task (what ``master.proxy.<name>(**kwargs)`` does).

        :param channel_name: the task queue's name.
        :param kwargs: the task function's keyword arguments.
        :param message_kwargs: more :class:`~amqpfast.Message` properties
            (``expiration``, ``priority`` ...).
        :returns: the publish result: the broker's Basic.Ack, or the
            returned message when no queue of that name exists.
        """
        message = Message(
            body=self.serialize(dict(kwargs)),
            content_type=self.CONTENT_TYPE,
            delivery_mode=self.DELIVERY_MODE,
            **message_kwargs,
        )
        return await self.exchange.publish(message, channel_name, mandatory=True)


class JsonMaster(Master):
    """A :class:`Master` whose tasks are JSON (``application/json``)."""

    SERIALIZER = json
    CONTENT_TYPE = "application/json"

    def serialize(self, data: Any) -> bytes:
        """The task's keyword arguments as UTF-8 JSON.

        :param data: what to send.
        """
        return json.dumps(data, ensure_ascii=False).encode()


class CompressedJsonMaster(Master):
    """A :class:`Master` whose tasks are gzip-compressed JSON.

    A worker decompresses a task body only up to
    :attr:`MAX_DECOMPRESSED_SIZE` bytes: a body that expands further (a few
    KiB of gzip can expand to gigabytes) raises
    :class:`DecompressionLimitError`, and the task is rejected without
    requeueing. Set the attribute on a subclass (or the instance) to change it.
    """

    SERIALIZER = json
    CONTENT_TYPE = "application/json;compression=gzip"
    COMPRESS_LEVEL = 6
    #: the largest decompressed task body a worker accepts, in bytes (64 MiB)
    MAX_DECOMPRESSED_SIZE = 64 * 1024 * 1024

    def serialize(self, data: Any) -> bytes:
        """The task's keyword arguments as gzipped UTF-8 JSON.

        :param data: what to send.
        """
        return gzip.compress(
            json.dumps(data, ensure_ascii=False).encode(), compresslevel=self.COMPRESS_LEVEL
        )

    def deserialize(self, data: bytes) -> Any:
        """Decompress and decode a task body.

        :param data: the body received.
        :raises DecompressionLimitError: it decompresses to more than
            :attr:`MAX_DECOMPRESSED_SIZE` bytes.
        """
        return json.loads(_gunzip(data, self.MAX_DECOMPRESSED_SIZE))


def _gunzip(data: bytes, limit: int) -> bytes:
    # gzip.decompress with a bound: never more than limit + 1 bytes out.
    # A loop, as gzip.decompress: a body may hold several gzip members.
    out = bytearray()
    while data:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
        out += inflater.decompress(data, limit - len(out) + 1)
        if len(out) > limit:
            raise DecompressionLimitError(limit)
        if not inflater.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        data = inflater.unused_data.lstrip(b"\x00")  # padding between members, as gzip's
    return bytes(out)
