"""A broken or hostile peer ends a connection with a typed error, never a bare one.

The peer here is a fake broker in the test's own loop: it speaks the broker's
side of the handshake and sends the frames a test chooses (the real broker
cannot be made to send them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pamqp import commands as spec

import amqpfast
from amqpfast.codec import BasicDeliver, FrameReader, FrameWriter, MethodFrame
from amqpfast.core import connect
from amqpfast.exceptions import (
    AMQPConnectionError,
    AuthenticationError,
    ChannelNotOpenError,
    ConnectionProtocolError,
    MessageTooLarge,
    ProtocolError,
)

# What the fake broker answers to a method from the client: the bytes to send.
Responder = Callable[[int, Any], bytes]


def frames(*methods: tuple[int, Any]) -> bytes:
    """Method frames, built with the codec's writer (channel, method)."""
    writer = FrameWriter(frame_max=0)
    for channel, method in methods:
        writer.method(channel, method)
    return b"".join(writer.take())


def delivery(channel: int, body: bytes) -> bytes:
    writer = FrameWriter()
    writer.content(channel, BasicDeliver("ctag", 1, False, "", "rk"), body)
    return b"".join(writer.take())


START = spec.Connection.Start(
    server_properties={"capabilities": {"publisher_confirms": True}},
    mechanisms="PLAIN AMQPLAIN",
    locales="en_US",
)
TUNE = spec.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=0)


class FakeBroker:
    """One TCP listener; each client gets ``start``, then ``tune``, then OpenOk.

    ``greeting``: bytes sent instead of Connection.Start.

    ``before`` and ``after`` map a method class of the client's to bytes sent
    right before and right after the answer to it (``after[None]``: right
    after Connection.Start). Every method the client sent is kept in
    ``received`` as (channel, method).
    """

    def __init__(
        self,
        start: Any = START,
        tune: Any = TUNE,
        greeting: bytes | None = None,
        before: dict[type | None, bytes] | None = None,
        after: dict[type | None, bytes] | None = None,
    ) -> None:
        self.start = start
        self.tune = tune
        self.greeting = greeting
        self.before = before or {}
        self.after = after or {}
        self.received: list[tuple[int, Any]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def methods(self, kind: type) -> list[Any]:
        return [method for _, method in self.received if isinstance(method, kind)]

    async def __aenter__(self) -> FakeBroker:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()

    def _answer(self, channel: int, method: Any) -> bytes:
        if isinstance(method, spec.Connection.StartOk):
            return frames((0, self.tune))
        if isinstance(method, spec.Connection.Open):
            return frames((0, spec.Connection.OpenOk()))
        if isinstance(method, spec.Channel.Open):
            return frames((channel, spec.Channel.OpenOk()))
        if isinstance(method, spec.Channel.Close):
            return frames((channel, spec.Channel.CloseOk()))
        if isinstance(method, spec.Basic.Consume):
            return frames((channel, spec.Basic.ConsumeOk(consumer_tag=method.consumer_tag)))
        if isinstance(method, spec.Connection.Close):
            return frames((0, spec.Connection.CloseOk()))
        return b""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readexactly(8)  # the client's protocol header
            greeting = frames((0, self.start)) if self.greeting is None else self.greeting
            writer.write(greeting + self.after.get(None, b""))
            decoder = FrameReader(frame_max=0)
            while data := await reader.read(65536):
                for event in decoder.feed(data):
                    if type(event) is not MethodFrame:
                        continue
                    channel, method = event.channel, event.method
                    self.received.append((channel, method))
                    kind = type(method)
                    writer.write(
                        self.before.get(kind, b"")
                        + self._answer(channel, method)
                        + self.after.get(kind, b"")
                    )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def fake_broker() -> AsyncIterator[Callable[..., FakeBroker]]:
    """A factory of fake brokers, each closed at the end of the test."""
    brokers: list[FakeBroker] = []

    def make(**options: Any) -> FakeBroker:
        broker = FakeBroker(**options)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        if broker._server is not None:
            broker._server.close()


# ------------------------------------------------------------ the handshake


async def test_mechanisms_that_are_not_utf8_fail_as_authentication_error(fake_broker):
    start = spec.Connection.Start(mechanisms=b"\xff\xfeMAGIC", locales="en_US")  # type: ignore[arg-type]
    async with fake_broker(start=start) as broker:
        with pytest.raises(AuthenticationError) as raised:
            await connect(broker.url, timeout=5)

    assert isinstance(raised.value, AMQPConnectionError)
    assert "PLAIN" in str(raised.value)


async def test_stray_bytes_next_to_our_mechanism_do_not_stop_the_login(fake_broker):
    start = spec.Connection.Start(mechanisms=b"\xc3( PLAIN", locales="en_US")  # type: ignore[arg-type]
    async with fake_broker(start=start) as broker:
        conn = await connect(broker.url, timeout=5)
        assert conn.is_opened
        await conn.close()

    [start_ok] = broker.methods(spec.Connection.StartOk)
    assert start_ok.mechanism == "PLAIN"


@pytest.mark.parametrize(
    "greeting",
    [
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",  # not a broker at all
        b"\x15\x03\x03\x00\x02\x02\x46",  # a TLS alert
        frames((0, START))[:-1] + b"\x00",  # a Connection.Start with a bad frame end
    ],
    ids=["http", "tls-alert", "bad-frame-end"],
)
async def test_bytes_that_are_not_amqp_fail_connect_with_a_connection_error(fake_broker, greeting):
    async with fake_broker(greeting=greeting) as broker:
        with pytest.raises(ConnectionProtocolError) as raised:
            await connect(broker.url, timeout=5)

    assert isinstance(raised.value, AMQPConnectionError)
    assert raised.value.reply_code == 501


@pytest.mark.parametrize("frame_max", [1, 100, 4095])
async def test_frame_max_below_the_minimum_is_a_connection_error(fake_broker, frame_max):
    tune = spec.Connection.Tune(channel_max=0, frame_max=frame_max, heartbeat=0)
    async with fake_broker(tune=tune) as broker:
        with pytest.raises(ConnectionProtocolError) as raised:
            await connect(broker.url, timeout=5)

    assert isinstance(raised.value, AMQPConnectionError)
    assert raised.value.reply_code == 502
    assert f"frame_max {frame_max}" in str(raised.value)


async def test_frame_max_of_the_minimum_is_taken(fake_broker):
    tune = spec.Connection.Tune(channel_max=0, frame_max=4096, heartbeat=0)
    async with fake_broker(tune=tune) as broker:
        conn = await connect(broker.url, timeout=5)
        assert conn.frame_max == 4096
        await conn.close()


# ------------------------------------------------------------ after the handshake


async def test_frame_on_a_channel_never_opened_closes_the_connection(fake_broker):
    async with fake_broker(after={spec.Channel.Open: delivery(7, b"hello")}) as broker:
        conn = await connect(broker.url, timeout=5)
        # the error fails the read that brought it, OpenOk included
        with contextlib.suppress(ChannelNotOpenError):
            await conn.channel(publisher_confirms=False)
        with pytest.raises(ChannelNotOpenError) as raised:
            await asyncio.wait_for(conn.closing, 5)
        await asyncio.sleep(0.05)  # the fake broker reads the Close

    assert isinstance(raised.value, AMQPConnectionError)
    assert isinstance(raised.value, ProtocolError)
    assert raised.value.reply_code == 504
    [close] = broker.methods(spec.Connection.Close)
    assert close.reply_code == 504
    assert close.reply_text.startswith("CHANNEL_ERROR - ")


async def test_frame_on_another_channel_during_the_handshake_fails_connect(fake_broker):
    # before Connection.Open no channel can be open
    async with fake_broker(after={None: delivery(1, b"x")}) as broker:
        with pytest.raises(ChannelNotOpenError):
            await connect(broker.url, timeout=5)


async def test_deliveries_in_flight_while_a_channel_closes_are_taken(fake_broker):
    # After our Channel.Close the broker may still send what was on its way,
    # up to the CloseOk: the channel number is still ours until then.
    async with fake_broker(before={spec.Channel.Close: delivery(1, b"late")}) as broker:
        conn = await connect(broker.url, timeout=5)
        channel = await conn.channel(publisher_confirms=False)
        await channel.close(timeout=5)
        again = await conn.channel(publisher_confirms=False)

        assert conn.is_opened
        assert again.number == 1
        await conn.close()


async def test_message_over_max_message_size_closes_the_connection(fake_broker):
    async with fake_broker(after={spec.Basic.Consume: delivery(1, b"x" * 1001)}) as broker:
        conn = await connect(broker.url, timeout=5, max_message_size=1000)
        assert conn.max_message_size == 1000
        channel = await conn.channel(publisher_confirms=False)
        # the error fails the read that brought it, ConsumeOk included
        with contextlib.suppress(MessageTooLarge):
            await channel.basic_consume("q", lambda message: None, consumer_tag="ctag")

        with pytest.raises(MessageTooLarge) as raised:
            await asyncio.wait_for(conn.closing, 5)
        await asyncio.sleep(0.05)  # the fake broker reads the Close

    assert isinstance(raised.value, AMQPConnectionError)
    assert raised.value.reply_code == 506
    assert "1001 bytes" in str(raised.value)
    assert "max_message_size 1000" in str(raised.value)
    [close] = broker.methods(spec.Connection.Close)
    assert close.reply_code == 506


async def test_max_message_size_url_option_lets_a_message_of_that_size_through(fake_broker):
    async with fake_broker(after={spec.Basic.Consume: delivery(1, b"y" * 1000)}) as broker:
        conn = await connect(broker.url + "?max_message_size=1000", timeout=5)
        channel = await conn.channel(publisher_confirms=False)
        received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        await channel.basic_consume(
            "q", lambda message: received.set_result(message.body), consumer_tag="ctag"
        )

        assert await asyncio.wait_for(received, 5) == b"y" * 1000
        assert conn.is_opened
        await conn.close()


# ------------------------------------------------------------ URL options


async def test_connect_robust_refuses_an_option_that_is_not_utf8_at_once():
    # fail_fast=0 would retry a connection error for ever: a bad URL is not one
    url = "amqp://guest:guest@127.0.0.1:1/?fail_fast=0&heartbeat=%ff"

    with pytest.raises(ValueError, match=r"heartbeat='%FF' is invalid: .*not UTF-8"):
        await asyncio.wait_for(amqpfast.connect_robust(url), 5)


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        ("heartbeat=soon", r"heartbeat='soon' is invalid: expected an integer from 0 to 65535"),
        ("frame_max=100", r"frame_max='100' is invalid: expected 0 \(no limit\) or an integer"),
        ("max_message_size=-1", r"max_message_size='-1' is invalid: expected 0 \(no limit\)"),
    ],
)
async def test_connect_names_the_bad_option(query, pattern):
    with pytest.raises(ValueError, match=pattern):
        await asyncio.wait_for(amqpfast.connect(f"amqp://guest:guest@127.0.0.1:1/?{query}"), 5)


# ------------------------------------------------------------ with RabbitMQ


async def test_message_over_the_limit_from_rabbitmq_fails_basic_get(amqp_url, unique):
    conn = await connect(f"{amqp_url}?name={unique}&max_message_size=1000", timeout=10)
    channel = await conn.channel()
    queue = (await channel.queue_declare("", exclusive=True)).queue
    await channel.basic_publish(b"a" * 1000, routing_key=queue)
    await channel.basic_publish(b"b" * 1001, routing_key=queue)

    assert (await channel.basic_get(queue, no_ack=True)).body == b"a" * 1000
    with pytest.raises(MessageTooLarge):
        await channel.basic_get(queue, no_ack=True, timeout=10)
    with pytest.raises(MessageTooLarge):
        await asyncio.wait_for(conn.closing, 5)


async def test_high_level_connect_takes_max_message_size(amqp_url):
    connection = await amqpfast.connect(amqp_url, max_message_size=1000)
    try:
        assert connection.connection.max_message_size == 1000
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(amqpfast.Message(b"c" * 1001), queue.name)

        with pytest.raises(MessageTooLarge):
            await queue.get(timeout=10)
    finally:
        await connection.close()
