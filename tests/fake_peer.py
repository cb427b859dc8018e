"""A scripted fake broker: it replays a recorded session, frame by frame, over TCP.

The session is a list of :class:`Step`: what the broker sent (``frames``, raw
bytes, one frame each) in answer to one method of the client's (``trigger``,
a method name such as ``"Basic.Get"``, or ``"AMQP"`` for the protocol header).
Each method the client sends takes the first step not used yet whose trigger
it matches, and the peer writes that step's frames. A test may change the
frames in any way first (the fuzzer in ``tests/test_client_fuzz.py`` mutates,
truncates, duplicates and reorders them): the peer sends what it is given.

Frames on a channel other than 0 are recorded on channel 1; they go out on
the channel of the method that triggered them (the client may number its
channels differently after a fault). A Connection.Close or Channel.Close of
the client's that no step answers gets its CloseOk, as a broker would answer:
the client's close then ends at once instead of waiting for its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import struct
from dataclasses import dataclass, field
from typing import Any

from pamqp import commands as spec

from amqpfast import _spec
from amqpfast.codec import (
    BasicAck,
    BasicDeliver,
    BasicGetOk,
    BasicNack,
    BasicProperties,
    BasicReturn,
    ContentMessage,
    FrameReader,
    FrameWriter,
    MethodFrame,
)
from amqpfast.exceptions import ProtocolError

_FRAME_HEADER = struct.Struct(">BHI")
_CONTENT_INDEXES = frozenset(
    (_spec.BASIC_PUBLISH, _spec.BASIC_RETURN, _spec.BASIC_DELIVER, _spec.BASIC_GET_OK)
)


@dataclass
class Frame:
    """One frame of a step: its bytes and, for a method frame, the method it encodes."""

    data: bytes
    method: Any = None

    @property
    def channel(self) -> int:
        return int.from_bytes(self.data[1:3], "big") if len(self.data) >= 3 else 0


@dataclass
class Step:
    """The frames the broker sent in answer to one method of the client's.

    :param trigger: the method's name (``"Basic.Get"``), or ``"AMQP"``: the
        protocol header that opens the connection.
    :param frames: what was sent, in order.
    :param writes: offsets into the step's bytes where a write ends and the
        next one starts (so that the client reads them apart).
    :param then: what the peer does once the step is written: ``None`` (go
        on), ``"close"`` (close the socket), ``"abort"`` (reset it) or
        ``"stall"`` (read on, send nothing more).
    """

    trigger: str
    frames: list[Frame]
    writes: list[int] = field(default_factory=list)
    then: str | None = None


# ------------------------------------------------------------ building frames


def raw_frame(kind: int, channel: int, payload: bytes) -> bytes:
    """One frame built by hand (type, channel, payload, frame end)."""
    return _FRAME_HEADER.pack(kind, channel, len(payload)) + payload + b"\xce"


def method_frame(channel: int, method: Any) -> Frame:
    """The method frame of ``method`` (a content method without its header and body)."""
    writer = FrameWriter(frame_max=0)
    if getattr(method, "index", None) in _CONTENT_INDEXES:
        writer.content(channel, method, b"")
    else:
        writer.method(channel, method)
    data = b"".join(bytes(piece) for piece in writer.take())
    size = _FRAME_HEADER.unpack_from(data)[2]
    return Frame(data[: size + 8], method)


def content_frames(
    channel: int, method: Any, body: bytes, properties: Any = None, pieces: int = 1
) -> list[Frame]:
    """A content method, its content header and the body in ``pieces`` body frames."""
    writer = FrameWriter(frame_max=0)
    writer.content(channel, method, b"", properties)
    data = b"".join(bytes(piece) for piece in writer.take())
    method_size = _FRAME_HEADER.unpack_from(data)[2] + 8
    header = bytearray(data[method_size:])
    header[7 + 4 : 7 + 12] = struct.pack(">Q", len(body))  # the body size it announces
    frames = [Frame(data[:method_size], method), Frame(bytes(header))]
    step = -(-len(body) // pieces) if body else 0
    for offset in range(0, len(body), step or 1):
        frames.append(Frame(raw_frame(3, channel, body[offset : offset + step])))
    return frames


SERVER_PROPERTIES: dict[str, Any] = {
    "product": "RabbitMQ",
    "version": "3.13.7",
    "platform": "Erlang/OTP 26.2.5",
    "cluster_name": "rabbit@fake",
    "capabilities": {
        "publisher_confirms": True,
        "exchange_exchange_bindings": True,
        "basic.nack": True,
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
        "per_consumer_qos": True,
        "direct_reply_to": True,
    },
}
QUEUE = "fuzz"
CONSUMER_TAG = "ctag"
#: the bodies the recorded session delivers to the consumer, then gives to Basic.Get
DELIVERED = (b"first", bytes(range(256)) * 2, b"")
FETCHED = b"fetched " * 40
_PROPERTIES = BasicProperties(
    content_type="application/json",
    headers={"x-attempt": 1, "trace": "abc", "flags": [True, 1.5, None]},
    delivery_mode=2,
    message_id="m-1",
    timestamp=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
)


def recorded_session() -> list[Step]:
    """A session as RabbitMQ plays it for this client program.

    connect; a channel in confirm mode; declare ``fuzz``; consume it (three
    deliveries follow, one body in three frames, one empty); publish three
    messages (Basic.Ack 1, then Basic.Ack 3 multiple); Basic.Get twice (a
    message in two body frames, then GetEmpty); a passive declare of a
    missing queue (the broker closes the channel, 404); a second channel;
    Basic.Qos on it (the broker closes the connection, 320).
    """
    deliveries: list[Frame] = []
    for tag, body in enumerate(DELIVERED, 1):
        deliver = BasicDeliver(CONSUMER_TAG, tag, False, "", QUEUE)
        deliveries += content_frames(1, deliver, body, _PROPERTIES, pieces=1 + (tag == 2) * 2)
    get_ok = BasicGetOk(4, False, "", QUEUE, 0)
    return [
        Step(
            "AMQP",
            [
                method_frame(
                    0,
                    spec.Connection.Start(
                        server_properties=SERVER_PROPERTIES,
                        mechanisms="AMQPLAIN PLAIN",
                        locales="en_US",
                    ),
                )
            ],
        ),
        Step(
            "Connection.StartOk",
            [
                method_frame(
                    0, spec.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60)
                )
            ],
        ),
        Step("Connection.Open", [method_frame(0, spec.Connection.OpenOk())]),
        Step("Channel.Open", [method_frame(1, spec.Channel.OpenOk())]),
        Step("Confirm.Select", [method_frame(1, spec.Confirm.SelectOk())]),
        Step(
            "Queue.Declare",
            [method_frame(1, spec.Queue.DeclareOk(queue=QUEUE, message_count=4, consumer_count=0))],
        ),
        Step(
            "Basic.Consume",
            [method_frame(1, spec.Basic.ConsumeOk(consumer_tag=CONSUMER_TAG)), *deliveries],
        ),
        Step("Basic.Publish", [method_frame(1, BasicAck(1, False))]),
        Step("Basic.Publish", []),
        Step("Basic.Publish", [method_frame(1, BasicAck(3, True))]),
        Step("Basic.Get", content_frames(1, get_ok, FETCHED, BasicProperties(), pieces=2)),
        Step("Basic.Get", [method_frame(1, spec.Basic.GetEmpty())]),
        Step(
            "Queue.Declare",
            [
                method_frame(
                    1,
                    spec.Channel.Close(
                        reply_code=404,
                        reply_text="NOT_FOUND - no queue 'missing' in vhost '/'",
                        class_id=50,
                        method_id=10,
                    ),
                )
            ],
        ),
        Step("Channel.Open", [method_frame(1, spec.Channel.OpenOk())]),
        Step(
            "Basic.Qos",
            [
                method_frame(
                    0,
                    spec.Connection.Close(
                        reply_code=320,
                        reply_text="CONNECTION_FORCED - broker forced connection closure"
                        " with reason 'shutdown'",
                        class_id=0,
                        method_id=0,
                    ),
                )
            ],
        ),
    ]


def extra_frames() -> dict[str, list[Frame]]:
    """Well-formed frames a broker may send at any time (or a broken one might)."""
    returned = BasicReturn(312, "NO_ROUTE", "", "nowhere")
    stranger = BasicDeliver("someone-else", 9, False, "", QUEUE)
    return {
        "heartbeat": [Frame(_spec.HEARTBEAT_FRAME)],
        "blocked": [method_frame(0, spec.Connection.Blocked(reason="low on memory"))],
        "unblocked": [method_frame(0, spec.Connection.Unblocked())],
        "connection.close": [
            method_frame(0, spec.Connection.Close(reply_code=541, reply_text="INTERNAL_ERROR"))
        ],
        "connection.close-ok": [method_frame(0, spec.Connection.CloseOk())],
        "connection.start": [
            method_frame(0, spec.Connection.Start(mechanisms="PLAIN", locales="en_US"))
        ],
        "connection.tune": [
            method_frame(0, spec.Connection.Tune(channel_max=1, frame_max=4096, heartbeat=1))
        ],
        "update-secret-ok": [method_frame(0, spec.Connection.UpdateSecretOk())],
        "flow-off": [method_frame(1, spec.Channel.Flow(active=False))],
        "flow-on": [method_frame(1, spec.Channel.Flow(active=True))],
        "channel.close": [
            method_frame(
                1, spec.Channel.Close(reply_code=406, reply_text="PRECONDITION_FAILED - unknown")
            )
        ],
        "channel.close-ok": [method_frame(1, spec.Channel.CloseOk())],
        "channel.open-ok": [method_frame(1, spec.Channel.OpenOk())],
        "cancel": [method_frame(1, spec.Basic.Cancel(consumer_tag=CONSUMER_TAG, nowait=True))],
        "cancel-ok": [method_frame(1, spec.Basic.CancelOk(consumer_tag=CONSUMER_TAG))],
        "consume-ok": [method_frame(1, spec.Basic.ConsumeOk(consumer_tag="other"))],
        "declare-ok": [method_frame(1, spec.Queue.DeclareOk(queue="other"))],
        "select-ok": [method_frame(1, spec.Confirm.SelectOk())],
        "qos-ok": [method_frame(1, spec.Basic.QosOk())],
        "get-empty": [method_frame(1, spec.Basic.GetEmpty())],
        "ack-0-multiple": [method_frame(1, BasicAck(0, True))],
        "ack-unknown": [method_frame(1, BasicAck(99, False))],
        "ack-huge-multiple": [method_frame(1, BasicAck(2**64 - 1, True))],
        "nack-2": [method_frame(1, BasicNack(2, False, False))],
        "nack-all": [method_frame(1, BasicNack(50, True, False))],
        "nack-huge-multiple": [method_frame(1, BasicNack(2**64 - 1, True, False))],
        "return": content_frames(
            1, returned, b"back", BasicProperties(message_id="unknown-id"), pieces=1
        ),
        "deliver-stranger": content_frames(1, stranger, b"not yours"),
        "deliver-empty-header": content_frames(
            1, BasicDeliver(CONSUMER_TAG, 0, True, "", QUEUE), b""
        ),
        "get-ok": content_frames(1, BasicGetOk(7, False, "", QUEUE, 1), b"stray"),
        "deliver-channel-2": content_frames(2, BasicDeliver(CONSUMER_TAG, 1, False, "", ""), b"x"),
        "method-channel-9": [method_frame(9, spec.Channel.OpenOk())],
        "protocol-header": [Frame(b"AMQP\x00\x00\x09\x01")],
        "header-only": [content_frames(1, stranger, b"orphan")[1]],
        "body-only": [Frame(raw_frame(3, 1, b"orphan"))],
    }


# ------------------------------------------------------------ the peer


def _patched(frame: bytes, channel: int) -> bytes:
    # recorded on channel 1: sent on the channel of the client's method
    if channel > 1 and frame[1:3] == b"\x00\x01":
        return frame[:1] + channel.to_bytes(2, "big") + frame[3:]
    return frame


def method_name(event: Any) -> str:
    """The name of the method a decoded event carries (``"Basic.Publish"`` ...)."""
    method = event.method
    return str(getattr(method, "name", type(method).__name__))


class ScriptedPeer:
    """A TCP listener on localhost that plays ``steps`` to each client.

    ``received`` keeps every (channel, method name) the clients sent;
    ``problems`` what went wrong on the peer's side (the client sent bytes
    that do not decode: a bug of the client's, or of the peer itself).
    ``open_sockets`` counts the client connections not closed yet.
    """

    def __init__(self, steps: list[Step], answer_closes: bool = True) -> None:
        self.steps = steps
        self.answer_closes = answer_closes
        self.received: list[tuple[int, str]] = []
        self.problems: list[str] = []
        self.open_sockets = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def __aenter__(self) -> ScriptedPeer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def wait_closed_by_client(self, timeout: float) -> bool:
        """Wait until every client connection is closed; False if one is still open."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._all_closed.wait()
        return self.open_sockets == 0

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.open_sockets += 1
        self._all_closed.clear()
        try:
            await self._play(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception as error:  # the peer's own bug: the test must see it
            self.problems.append(f"peer failed: {error!r}")
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self.open_sockets -= 1
            if not self.open_sockets:
                self._all_closed.set()
            self._tasks.discard(task)

    async def _play(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        used = [False] * len(self.steps)
        header = await reader.readexactly(8)
        if header != _spec.PROTOCOL_HEADER:
            self.problems.append(f"the client opened with {header!r}")
            return
        self.received.append((0, "AMQP"))
        stalled = not await self._answer("AMQP", 0, used, writer)
        decoder = FrameReader(frame_max=0)
        while data := await reader.read(65536):
            try:
                events = decoder.feed(data)
            except ProtocolError as error:
                self.problems.append(f"the client sent bytes that do not decode: {error}")
                return
            for event in events:
                if type(event) not in (MethodFrame, ContentMessage):
                    continue  # heartbeats
                name = method_name(event)
                self.received.append((event.channel, name))
                if not stalled:
                    stalled = not await self._answer(name, event.channel, used, writer)
        # the client closed its side: so do we

    async def _answer(
        self, name: str, channel: int, used: list[bool], writer: asyncio.StreamWriter
    ) -> bool:
        """Play the step ``name`` triggers; False once the peer is to send nothing more."""
        for index, step in enumerate(self.steps):
            if not used[index] and step.trigger == name:
                used[index] = True
                break
        else:
            if self.answer_closes and name == "Connection.Close":
                writer.write(method_frame(0, spec.Connection.CloseOk()).data)
            elif self.answer_closes and name == "Channel.Close":
                writer.write(method_frame(channel, spec.Channel.CloseOk()).data)
            return True
        data = b"".join(_patched(frame.data, channel) for frame in step.frames)
        start = 0
        for stop in [*sorted(set(step.writes)), len(data)]:
            if start < stop <= len(data):
                writer.write(data[start:stop])
                await writer.drain()
                # a moment for the client to read this part on its own
                await asyncio.sleep(0.001)
                start = stop
        if step.then == "abort":
            writer.transport.abort()
            raise ConnectionResetError  # ends _serve
        if step.then == "close":
            writer.close()  # what was written goes out first
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1):
                    await writer.wait_closed()
            raise ConnectionResetError
        return step.then != "stall"
