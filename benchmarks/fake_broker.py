"""A stand-in broker that costs the client nothing, for measuring a client alone.

It speaks just enough AMQP 0-9-1 for the three clients under test: the
handshake, Channel.Open, Confirm.Select, Basic.Qos, Queue.Declare,
Basic.Consume/Cancel and the closes. It runs in a process of its own, so its
CPU is not the client's, and it answers at once, so the client is never waiting
on a busy broker.

What the queue names mean (the scenarios rely on it):

- ``Basic.Consume`` on ``fake.deliver.<n>``: ConsumeOk, then ``n`` Basic.Deliver
  frames (tags 1..n) in one write, encoded before the client asked;
- ``Basic.Publish`` anywhere: counted; on a confirm channel every read that
  brought publishes is confirmed by one ``Basic.Ack(multiple=True)``;
- ``Queue.Declare`` of ``fake.sink`` answers with the publishes counted on this
  connection as ``message_count``, of ``fake.acks`` with the consumer acks
  counted, of anything else with 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from multiprocessing.connection import Connection as Pipe
from typing import Any

from pamqp import commands as spec

from amqpfast.codec import (
    BasicAck,
    BasicDeliver,
    BasicProperties,
    BasicPublish,
    ContentMessage,
    FrameReader,
    FrameWriter,
    MethodFrame,
    ProtocolHeader,
)
from amqpfast.exceptions import ProtocolError

DELIVER_PREFIX = "fake.deliver."
SINK_QUEUE = "fake.sink"
ACKS_QUEUE = "fake.acks"
FRAME_MAX = 131072
CONTENT_TYPE = "application/octet-stream"

_SERVER_PROPERTIES: dict[str, Any] = {
    "product": "fake broker",
    "version": "0",
    "capabilities": {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
    },
}


def delivery_queue(count: int) -> str:
    """The queue name that makes the fake broker deliver ``count`` messages."""
    return f"{DELIVER_PREFIX}{count}"


class _Streams:
    """Delivery streams, encoded once and reused by every connection."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._cache: dict[tuple[int, str, str], bytes] = {}

    def get(self, channel: int, queue: str, consumer_tag: str) -> bytes:
        key = (channel, queue, consumer_tag)
        stream = self._cache.get(key)
        if stream is None:
            count = int(queue.removeprefix(DELIVER_PREFIX))
            writer = FrameWriter(FRAME_MAX)
            properties = BasicProperties(content_type=CONTENT_TYPE)
            for tag in range(1, count + 1):
                deliver = BasicDeliver(
                    consumer_tag=consumer_tag,
                    delivery_tag=tag,
                    redelivered=False,
                    exchange="",
                    routing_key=queue,
                )
                writer.content(channel, deliver, self.body, properties)
            stream = self._cache[key] = b"".join(writer.take())
        return stream


class _Connection(asyncio.Protocol):
    """One client connection: answers its methods, streams, counts, confirms."""

    def __init__(self, streams: _Streams) -> None:
        self.streams = streams
        self.reader = FrameReader(FRAME_MAX)
        self.writer = FrameWriter(FRAME_MAX)
        self.transport: asyncio.Transport | None = None
        self.published = 0
        self.acked = 0
        self.confirming: dict[int, int] = {}  # confirm channel -> publishes seen on it
        self.unconfirmed: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            events = self.reader.feed(data)
        except ProtocolError:
            assert self.transport is not None
            self.transport.abort()
            return
        for event in events:
            kind = type(event)
            if kind is ContentMessage:
                self._on_content(event)
            elif kind is MethodFrame:
                self._on_method(event.channel, event.method)
            elif kind is ProtocolHeader:
                self._send(
                    0,
                    spec.Connection.Start(
                        server_properties=_SERVER_PROPERTIES, mechanisms="PLAIN", locales="en_US"
                    ),
                )
        # every publish of this read confirmed at once, as a busy broker does
        for channel in self.unconfirmed:
            self.writer.ack(channel, self.confirming[channel], True)
        self.unconfirmed.clear()
        self._flush()

    def _send(self, channel: int, method: Any) -> None:
        self.writer.method(channel, method)

    def _flush(self) -> None:
        if self.writer and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(self.writer.take())

    def _on_content(self, event: Any) -> None:
        if type(event.method) is not BasicPublish:
            return
        self.published += 1
        channel = event.channel
        if channel in self.confirming:
            self.confirming[channel] += 1
            self.unconfirmed.add(channel)

    def _on_method(self, channel: int, method: Any) -> None:
        if type(method) is BasicAck:  # a consumer's ack
            self.acked = method.delivery_tag if method.multiple else self.acked + 1
        elif isinstance(method, spec.Connection.StartOk):
            self._send(0, spec.Connection.Tune(channel_max=2047, frame_max=FRAME_MAX, heartbeat=0))
        elif isinstance(method, spec.Connection.TuneOk):
            pass
        elif isinstance(method, spec.Connection.Open):
            self._send(0, spec.Connection.OpenOk())
        elif isinstance(method, spec.Channel.Open):
            self._send(channel, spec.Channel.OpenOk())
        elif isinstance(method, spec.Confirm.Select):
            self.confirming[channel] = 0
            if not method.nowait:
                self._send(channel, spec.Confirm.SelectOk())
        elif isinstance(method, spec.Basic.Qos):
            self._send(channel, spec.Basic.QosOk())
        elif isinstance(method, spec.Queue.Declare):
            self._on_declare(channel, method)
        elif isinstance(method, spec.Basic.Consume):
            self._on_consume(channel, method)
        elif isinstance(method, spec.Basic.Cancel):
            if not method.nowait:
                self._send(channel, spec.Basic.CancelOk(consumer_tag=method.consumer_tag))
        elif isinstance(method, spec.Queue.Delete):
            if not method.nowait:
                self._send(channel, spec.Queue.DeleteOk(message_count=0))
        elif isinstance(method, spec.Channel.Close):
            self.confirming.pop(channel, None)
            self.unconfirmed.discard(channel)
            self._send(channel, spec.Channel.CloseOk())
        elif isinstance(method, spec.Connection.Close):
            self._send(0, spec.Connection.CloseOk())
            self._flush()
            assert self.transport is not None
            self.transport.close()
        # anything else (heartbeats come as events of their own) needs no answer

    def _on_declare(self, channel: int, method: spec.Queue.Declare) -> None:
        queue = method.queue or f"fake.gen.{id(self)}"
        count = {SINK_QUEUE: self.published, ACKS_QUEUE: self.acked}.get(queue, 0)
        if not method.nowait:
            self._send(
                channel,
                spec.Queue.DeclareOk(queue=queue, message_count=count, consumer_count=0),
            )

    def _on_consume(self, channel: int, method: spec.Basic.Consume) -> None:
        tag = method.consumer_tag or f"fake.ctag.{channel}"
        if not method.nowait:
            self._send(channel, spec.Basic.ConsumeOk(consumer_tag=tag))
        queue = method.queue or ""
        if queue.startswith(DELIVER_PREFIX):
            self._flush()
            assert self.transport is not None
            # one write: the transport sends it as fast as the socket takes it
            self.transport.write(self.streams.get(channel, queue, tag))


async def _serve(pipe: Pipe, body: bytes, warm: list[tuple[int, str, str]]) -> None:
    streams = _Streams(body)
    for channel, queue, tag in warm:
        streams.get(channel, queue, tag)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(streams), "127.0.0.1", 0)
    stop = asyncio.Event()
    loop.add_reader(pipe.fileno(), stop.set)
    pipe.send(server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
    loop.remove_reader(pipe.fileno())


def _main(pipe: Pipe, body: bytes, warm: list[tuple[int, str, str]]) -> None:
    try:
        import uvloop
    except ImportError:  # the selector loop serves too, a bit slower
        asyncio.run(_serve(pipe, body, warm))
    else:
        uvloop.run(_serve(pipe, body, warm))


class FakeBroker:
    """The fake broker in a child process (``with FakeBroker(...) as broker: broker.url``).

    :param body: the body of every delivered message.
    :param warm: (channel, queue, consumer tag) streams to encode before serving.
    """

    def __init__(self, body: bytes, warm: list[tuple[int, str, str]] | None = None) -> None:
        self.body = body
        self.warm = warm or []
        self.port = 0
        self._process: Any = None
        self._pipe: Pipe | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self) -> FakeBroker:
        context = multiprocessing.get_context("spawn")  # no inherited loop or sockets
        parent, child = context.Pipe()
        self._process = context.Process(
            target=_main, args=(child, self.body, self.warm), name="fake-broker", daemon=True
        )
        self._process.start()
        child.close()
        self._pipe = parent
        if not parent.poll(60):
            self.stop()
            raise RuntimeError("the fake broker did not start")
        self.port = parent.recv()
        return self

    def stop(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):
                self._pipe.send("stop")
            self._pipe.close()
            self._pipe = None
        if self._process is not None:
            self._process.join(5)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)
            self._process = None

    def __enter__(self) -> FakeBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
