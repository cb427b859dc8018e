"""Waits on the broker are bounded; what a publish sends carries an id.

A publish waits while the socket does not drain (a stalled peer), the
broker blocks the connection (Connection.Blocked, a resource alarm) or
has flow off on the channel (Channel.Flow); ``timeout`` covers those waits
and the confirm, and a publish that timed out leaves the channel usable.
A channel close that gets no CloseOk closes the channel all the same.
Messages without a message_id get a random UUID4, as aiormq gives them.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import pytest
from broker_tools import TCPProxy, wait_for_connection_named, wait_until
from pamqp import commands as spec
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp.body import ContentBody

import amqpfast
from amqpfast import Message
from amqpfast.codec import BasicProperties, FrameWriter
from amqpfast.core import Connection, connect

MARGIN = 0.5  # how much later than its timeout a publish may end


def method_frame(channel: int, method: object) -> bytes:
    writer = FrameWriter()
    writer.method(channel, method)
    return b"".join(writer.take())


async def timed_out_within(call: Any, timeout: float) -> float:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call, timeout + 5)  # the outer bound only catches a hang
    took = time.monotonic() - started
    assert took < timeout + MARGIN, f"took {took:.2f} s for a {timeout} s timeout"
    return took


# ------------------------------------------------------------ a stalled peer


async def test_a_publish_timeout_covers_the_wait_for_the_socket(
    proxy: TCPProxy, amqp_url: str, unique: str
) -> None:
    async with await amqpfast.connect(proxy.url(amqp_url), timeout=10) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique, auto_delete=True)
        proxy.stall()  # nothing is forwarded: the socket fills up
        big = Message(b"x" * (1 << 20))
        backlog = [
            asyncio.ensure_future(channel.default_exchange.publish(big, unique)) for _ in range(64)
        ]
        protocol = connection.connection._protocol
        await wait_until(lambda: protocol is not None and protocol.paused)

        await timed_out_within(
            channel.default_exchange.publish(Message(b"late"), unique, timeout=0.5), 0.5
        )

        proxy.resume()
        await asyncio.wait_for(asyncio.gather(*backlog), 30)
        # usable afterwards, and the message that timed out before it was sent is not there
        await channel.default_exchange.publish(Message(b"after"), unique, timeout=5)
        assert (await queue.declare()).message_count == 65


# ------------------------------------------------------------ channel close


@pytest.mark.parametrize("ahead", ["nothing", "a call without answer"])
async def test_a_channel_close_without_close_ok_is_bounded(
    proxy: TCPProxy, amqp_url: str, unique: str, ahead: str
) -> None:
    conn = await connect(proxy.url(amqp_url) + f"?name={unique}&heartbeat=0")
    try:
        channel = await conn.channel()
        channel.CHANNEL_CLOSE_TIMEOUT = 0.5
        number = channel.number
        proxy.stall()
        if ahead != "nothing":  # holds the channel: the Close waits behind it
            declaring = asyncio.ensure_future(channel.queue_declare(unique, auto_delete=True))
            await asyncio.sleep(0.1)
        started = time.monotonic()
        await asyncio.wait_for(channel.close(), 5)
        assert time.monotonic() - started < 0.5 + MARGIN
        assert channel.is_closed
        if ahead != "nothing":
            with pytest.raises(amqpfast.exceptions.AMQPError):
                await asyncio.wait_for(declaring, 1)
        assert conn.channels.get(number) is channel  # taken until the broker answers

        proxy.resume()
        await wait_until(lambda: number not in conn.channels)
        reopened = await conn.channel(channel_number=number)  # the number is free again
        assert (await reopened.queue_declare("", exclusive=True)).queue
    finally:
        await conn.close()


async def test_a_close_behind_a_call_given_up_returns_quietly(
    proxy: TCPProxy, amqp_url: str
) -> None:
    # the cancelled call closes the channel; the close waiting behind it has nothing left to do
    conn = await connect(proxy.url(amqp_url) + "?heartbeat=0")
    try:
        channel = await conn.channel()
        proxy.slow(0.5)
        declaring = asyncio.ensure_future(channel.queue_declare("", exclusive=True))
        await asyncio.sleep(0.1)
        closing = asyncio.ensure_future(channel.close())
        await asyncio.sleep(0.1)
        declaring.cancel()
        with pytest.raises(asyncio.CancelledError):
            await declaring
        await asyncio.wait_for(closing, 10)
        assert channel.is_closed
        proxy.slow(0)
    finally:
        await conn.close()


# ------------------------------------------------------------ Connection.Blocked


async def test_a_publish_waits_while_the_broker_blocks_the_connection(
    proxy: TCPProxy, amqp_url: str, unique: str
) -> None:
    # The shared broker must not get an alarm: the proxy plays Connection.Blocked.
    conn = await connect(proxy.url(amqp_url) + f"?name={unique}&heartbeat=0")
    try:
        channel = await conn.channel()
        queue = (await channel.queue_declare("", exclusive=True)).queue
        await wait_for_connection_named(unique)
        proxy.inject(method_frame(0, spec.Connection.Blocked(reason="low on memory")))
        await wait_until(lambda: conn.is_blocked)

        await timed_out_within(
            channel.basic_publish(b"dropped", routing_key=queue, timeout=0.3), 0.3
        )
        waiting = asyncio.ensure_future(channel.basic_publish(b"kept", routing_key=queue))
        await asyncio.sleep(0.2)
        assert not waiting.done()

        proxy.inject(method_frame(0, spec.Connection.Unblocked()))
        assert isinstance(await asyncio.wait_for(waiting, 5), spec.Basic.Ack)
        # the publish that timed out never went out
        assert (await channel.queue_declare(queue, passive=True)).message_count == 1
    finally:
        await conn.close()


async def test_a_publish_waiting_for_an_unblock_ends_with_the_connection(
    proxy: TCPProxy, amqp_url: str, unique: str
) -> None:
    conn = await connect(proxy.url(amqp_url) + f"?name={unique}&heartbeat=0")
    channel = await conn.channel()
    await wait_for_connection_named(unique)
    proxy.inject(method_frame(0, spec.Connection.Blocked(reason="disk")))
    await wait_until(lambda: conn.is_blocked)
    waiting = asyncio.ensure_future(channel.basic_publish(b"x", routing_key="nowhere"))
    await asyncio.sleep(0.1)
    proxy.cut()
    with pytest.raises(amqpfast.exceptions.AMQPError):
        await asyncio.wait_for(waiting, 5)


# ------------------------------------------------------------ Channel.Flow


class FlowBroker:
    """Just enough of a broker to open a channel, switch its flow (RabbitMQ never
    does) and send what a broken peer would."""

    def __init__(self) -> None:
        self.published: list[bytes] = []
        self.flow_oks: list[bool] = []
        self.rejects: list[spec.Basic.Reject] = []
        self.writer: asyncio.StreamWriter | None = None
        self.channel_open = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"amqp://guest:guest@127.0.0.1:{port}/?heartbeat=0"

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def send(self, channel: int, frame: Any) -> None:
        assert self.writer is not None
        self.writer.write(pamqp_frame.marshal(frame, channel))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        await reader.readexactly(8)  # the protocol header
        self.send(0, spec.Connection.Start(mechanisms="PLAIN", locales="en_US"))
        buffer = b""
        while True:
            data = await reader.read(65536)
            if not data:
                return
            buffer += data
            while True:
                try:
                    used, channel, frame = pamqp_frame.unmarshal(buffer)
                except Exception:  # pamqp's "not enough bytes yet"
                    break
                buffer = buffer[used:]
                self._answer(channel, frame)

    def _answer(self, channel: int, frame: Any) -> None:
        if isinstance(frame, spec.Connection.StartOk):
            self.send(0, spec.Connection.Tune(channel_max=16, frame_max=131072, heartbeat=0))
        elif isinstance(frame, spec.Connection.Open):
            self.send(0, spec.Connection.OpenOk())
        elif isinstance(frame, spec.Channel.Open):
            self.send(channel, spec.Channel.OpenOk())
            self.channel_open.set()
        elif isinstance(frame, spec.Channel.FlowOk):
            self.flow_oks.append(frame.active)
        elif isinstance(frame, spec.Basic.Reject):
            self.rejects.append(frame)
        elif isinstance(frame, pamqp_header.ContentHeader) and frame.body_size == 0:
            self.published.append(b"")
        elif isinstance(frame, ContentBody):
            self.published.append(frame.value)
        elif isinstance(frame, spec.Connection.Close):
            self.send(0, spec.Connection.CloseOk())
        elif isinstance(frame, spec.Channel.Close):
            self.send(channel, spec.Channel.CloseOk())


@pytest.fixture
async def flow_broker() -> AsyncIterator[FlowBroker]:
    broker = FlowBroker()
    try:
        yield broker
    finally:
        await broker.close()


async def channel_with_flow_off(conn: Connection, broker: FlowBroker) -> Any:
    channel = await conn.channel(publisher_confirms=False)
    broker.send(channel.number, spec.Channel.Flow(active=False))
    await wait_until(lambda: not channel.flow_active)
    return channel


async def test_a_publish_waits_while_the_broker_has_flow_off(flow_broker: FlowBroker) -> None:
    conn: Connection = await connect(await flow_broker.start(), timeout=5)
    try:
        channel = await channel_with_flow_off(conn, flow_broker)
        assert flow_broker.flow_oks == [False]

        await timed_out_within(channel.basic_publish(b"dropped", routing_key="q", timeout=0.3), 0.3)
        waiting = asyncio.ensure_future(channel.basic_publish(b"kept", routing_key="q"))
        await asyncio.sleep(0.1)
        assert not waiting.done() and flow_broker.published == []

        flow_broker.send(channel.number, spec.Channel.Flow(active=True))
        await asyncio.wait_for(waiting, 5)
        await wait_until(lambda: bool(flow_broker.published))
        assert flow_broker.published == [b"kept"]
    finally:
        await asyncio.wait_for(conn.close(), 5)


async def test_a_publish_waiting_for_flow_ends_when_the_channel_closes(
    flow_broker: FlowBroker,
) -> None:
    conn: Connection = await connect(await flow_broker.start(), timeout=5)
    try:
        channel = await channel_with_flow_off(conn, flow_broker)
        waiting = asyncio.ensure_future(channel.basic_publish(b"x", routing_key="q"))
        await asyncio.sleep(0.1)
        await asyncio.wait_for(channel.close(), 5)
        with pytest.raises(amqpfast.exceptions.ChannelInvalidStateError):
            await asyncio.wait_for(waiting, 5)
    finally:
        await asyncio.wait_for(conn.close(), 5)


async def test_a_delivery_for_no_consumer_of_ours_goes_back(flow_broker: FlowBroker) -> None:
    conn: Connection = await connect(await flow_broker.start(), timeout=5)
    try:
        channel = await conn.channel(publisher_confirms=False)
        deliver = spec.Basic.Deliver(consumer_tag="nobody", delivery_tag=7, routing_key="q")
        flow_broker.send(channel.number, deliver)
        flow_broker.send(
            channel.number,
            pamqp_header.ContentHeader(body_size=2, properties=spec.Basic.Properties()),
        )
        flow_broker.send(channel.number, ContentBody(b"hi"))
        await wait_until(lambda: bool(flow_broker.rejects))
        assert [(r.delivery_tag, r.requeue) for r in flow_broker.rejects] == [(7, True)]
        assert not channel.is_closed
    finally:
        await asyncio.wait_for(conn.close(), 5)


# ------------------------------------------------------------ message ids


def test_message_ids_are_random_uuid4s(codec: ModuleType) -> None:
    ids = {codec.new_message_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for one in ids:
        parsed = uuid.UUID(hex=one)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == one
    # every hex digit turns up in every free position
    for position in set(range(32)) - {12, 16}:
        assert len({one[position] for one in ids}) == 16, position


def test_the_writer_stamps_an_id_only_where_none_is_given(codec: ModuleType) -> None:
    writer = codec.FrameWriter()
    reader = codec.FrameReader()

    def sent(properties: Any) -> Any:
        returned = writer.publish(1, b"x", "", "q", properties, True, False, True, True)
        frames = reader.feed(b"".join(writer.take()))
        assert frames[-1].properties.message_id == returned
        return returned

    stamped = [
        sent(None),
        sent(codec.BasicProperties(message_id="")),
        sent(spec.Basic.Properties()),
    ]
    assert all(uuid.UUID(hex=one).version == 4 for one in stamped) and len(set(stamped)) == 3
    assert sent(codec.BasicProperties(message_id="mine")) == "mine"
    assert sent(spec.Basic.Properties(message_id="theirs")) == "theirs"
    kept = codec.BasicProperties(content_type="text/plain")
    assert sent(kept) != sent(kept) and kept.message_id is None  # the properties stay as given
    assert writer.publish(1, b"x", "", "q", None, True, False, False, True) is None  # none sent
    # not asked for: nothing returned; the id is sent all the same
    assert writer.publish(1, b"x", "", "q", None, True, False, True) is None
    [message] = reader.feed(b"".join(writer.take()))[-1:]
    assert uuid.UUID(hex=message.properties.message_id).version == 4


def test_a_forked_child_makes_other_ids_than_its_parent(codec: ModuleType) -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running anything else
        os.write(write_end, "".join(codec.new_message_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = pipe.read()
    parent = "".join(codec.new_message_id() for _ in range(4))
    assert len(child) == len(parent) == 128 and child != parent


async def test_messages_without_an_id_get_a_uuid_and_keep_their_headers(
    amqp_url: str, unique: str
) -> None:
    async with await amqpfast.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique, auto_delete=True)
        for _ in range(2):
            await channel.default_exchange.publish(Message(b"a", headers={"k": 1}), unique)
        mine = Message(b"b", message_id="mine")
        await channel.default_exchange.publish(mine, unique)
        await channel.default_exchange.publish(mine, unique)  # one given twice stays as given
        other = await connection.channel()
        await other.default_exchange.publish(Message(b"c"), unique)  # another channel
        received = [await queue.get(no_ack=True, timeout=5) for _ in range(5)]

    generated = [received[0].message_id, received[1].message_id, received[4].message_id]
    assert len(set(generated)) == 3
    assert all(uuid.UUID(hex=one).version == 4 for one in generated)  # type: ignore[arg-type]
    assert [message.message_id for message in received[2:4]] == ["mine", "mine"]
    assert received[0].headers == {"k": 1}  # nothing added to them
    assert received[2].headers == {}


async def test_low_level_properties_are_not_changed_by_a_publish(
    amqp_url: str, unique: str
) -> None:
    conn = await connect(amqp_url)
    try:
        channel = await conn.channel()
        queue = (await channel.queue_declare("", exclusive=True)).queue
        shared = BasicProperties(content_type="text/plain")
        for _ in range(2):
            await channel.basic_publish(b"x", routing_key=queue, properties=shared)
        assert shared.message_id is None  # reused as given: each publish got its own id
        first = await channel.basic_get(queue, no_ack=True)
        second = await channel.basic_get(queue, no_ack=True)
        assert first.properties.message_id != second.properties.message_id
        assert first.properties.content_type == "text/plain"
    finally:
        await conn.close()


async def test_returns_of_messages_sharing_an_id_find_their_publish(
    amqp_url: str, unique: str
) -> None:
    conn = await connect(amqp_url)
    try:
        channel = await conn.channel(on_return_raises=True)
        queue = (await channel.queue_declare("", exclusive=True)).queue
        same = BasicProperties(message_id="same")
        results = await asyncio.gather(
            channel.basic_publish(b"routed", routing_key=queue, mandatory=True, properties=same),
            channel.basic_publish(b"lost", routing_key=unique, mandatory=True, properties=same),
            channel.basic_publish(b"routed", routing_key=queue, mandatory=True, properties=same),
            return_exceptions=True,
        )
        assert isinstance(results[0], spec.Basic.Ack) and isinstance(results[2], spec.Basic.Ack)
        assert isinstance(results[1], amqpfast.exceptions.PublishError)
        # nothing is left tracked once every publish has its answer
        assert channel._tag_keys == {}
    finally:
        await conn.close()


async def test_a_publish_that_fails_to_encode_leaves_nothing_tracked(amqp_url: str) -> None:
    conn = await connect(amqp_url)
    try:
        channel = await conn.channel()
        queue = (await channel.queue_declare("", exclusive=True)).queue
        bad = BasicProperties(headers={"x": object()})
        with pytest.raises(amqpfast.exceptions.EncodeError):
            await channel.basic_publish(b"x", routing_key=queue, mandatory=True, properties=bad)
        assert channel._confirms == {} and channel._tag_keys == {}
        # and the delivery tags still match the broker's
        ack = await channel.basic_publish(b"ok", routing_key=queue, mandatory=True, timeout=5)
        assert isinstance(ack, spec.Basic.Ack) and ack.delivery_tag == 1
    finally:
        await conn.close()
