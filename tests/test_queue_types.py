"""Quorum queues and streams through the aio-pika API, against the real broker.

Nothing here is special in the client: the queue type, the delivery limit, dead
lettering, stream offsets and single active consumers are queue and consume
arguments. The tests pin down that they go through as given (a stream offset as
a string, an integer or a timestamp), that the broker's answers reach the
application, and that its refusals arrive as typed errors on the right scope:
a channel error closes the channel only, a connection error the connection.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from broker_tools import wait_until

from amqpfast import Connection, DeliveryMode, IncomingMessage, Message, Queue
from amqpfast.abc import AbstractChannel
from amqpfast.exceptions import (
    ChannelPreconditionFailed,
    ConnectionNotImplemented,
)

QUORUM = {"x-queue-type": "quorum"}
STREAM = {"x-queue-type": "stream"}


async def publish_numbered(channel: AbstractChannel, queue: str, count: int) -> None:
    for number in range(count):
        await channel.default_exchange.publish(
            Message(str(number).encode(), delivery_mode=DeliveryMode.PERSISTENT), queue
        )


async def drain(queue: Queue, quiet: float = 0.5, **consume: Any) -> list[IncomingMessage]:
    """Every message the queue hands an iterator until none comes for ``quiet`` seconds."""
    received: list[IncomingMessage] = []
    async with queue.iterator(**consume) as messages:
        while True:
            try:
                async with asyncio.timeout(quiet):
                    message = await anext(messages)
            except TimeoutError:
                return received
            received.append(message)
            await message.ack()


# ------------------------------------------------------------ quorum queues


async def test_a_quorum_queue_takes_confirmed_persistent_messages(
    conn: Connection, unique: str
) -> None:
    channel = await conn.channel()
    queue = await channel.declare_queue(unique, durable=True, arguments=QUORUM)
    await publish_numbered(channel, unique, 5)

    again = await channel.declare_queue(unique, passive=True)
    assert again.declaration_result.message_count == 5
    first = await queue.get(timeout=5)
    assert first.body == b"0" and first.delivery_mode == DeliveryMode.PERSISTENT
    await first.reject(requeue=True)
    rest = [await queue.get(timeout=5) for _ in range(5)]
    assert sorted(message.body for message in rest) == [b"0", b"1", b"2", b"3", b"4"]
    [again_0] = [message for message in rest if message.body == b"0"]
    # a quorum queue counts the deliveries that came back
    assert again_0.redelivered and again_0.headers.get("x-delivery-count") == 1
    assert not any(message.redelivered for message in rest if message is not again_0)
    for message in rest:
        await message.ack()


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        ({"durable": False}, "non-durable"),
        ({"durable": True, "exclusive": True}, "exclusive"),
        ({"durable": True, "auto_delete": True}, "auto-delete"),
    ],
    ids=["non-durable", "exclusive", "auto-delete"],
)
async def test_a_quorum_queue_refuses_what_it_cannot_be(
    conn: Connection, unique: str, options: dict[str, bool], refused: str
) -> None:
    channel = await conn.channel()
    with pytest.raises(ChannelPreconditionFailed, match=refused):
        await channel.declare_queue(unique, arguments=QUORUM, **options)
    assert channel.is_closed and not conn.is_closed  # a channel error: the connection stays
    other = await conn.channel()
    with pytest.raises(ChannelPreconditionFailed, match="unsupported queue type"):
        await other.declare_queue(unique, durable=True, arguments={"x-queue-type": "nope"})


async def test_past_the_delivery_limit_a_message_is_dead_lettered(
    conn: Connection, unique: str
) -> None:
    channel = await conn.channel()
    dead = await channel.declare_queue(f"{unique}.dead", durable=True, arguments=QUORUM)
    queue = await channel.declare_queue(
        unique,
        durable=True,
        arguments={
            **QUORUM,
            "x-delivery-limit": 2,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead.name,
        },
    )
    await channel.default_exchange.publish(Message(b"poison"), unique)

    deliveries = 0
    while deliveries < 10:  # the limit ends this long before
        try:
            message = await queue.get(timeout=5, fail=False)
        except TimeoutError:
            break
        if message is None:
            break
        deliveries += 1
        await message.nack(requeue=True)

    # the first delivery and two more; then the broker dead-letters it
    assert deliveries == 3
    letter = await get_soon(dead)
    assert letter.body == b"poison"
    assert letter.headers["x-death"][0]["reason"] == "delivery_limit"  # type: ignore[index]
    await letter.ack()


async def get_soon(queue: Queue, within: float = 5) -> IncomingMessage:
    """The queue's next message, once it has one (dead lettering takes a moment)."""
    async with asyncio.timeout(within):
        while (message := await queue.get(timeout=within, fail=False)) is None:
            await asyncio.sleep(0.05)
    return message


async def test_a_single_active_consumer_hands_over_when_it_goes(
    conn: Connection, unique: str
) -> None:
    setup = await conn.channel()
    await setup.declare_queue(
        unique, durable=True, arguments={**QUORUM, "x-single-active-consumer": True}
    )
    received: dict[str, list[IncomingMessage]] = {"first": [], "second": []}
    channels = {}
    for name in received:
        channel = channels[name] = await conn.channel()
        await channel.set_qos(prefetch_count=3)
        queue = await channel.get_queue(unique)

        async def on_message(message: IncomingMessage, name: str = name) -> None:
            received[name].append(message)
            if name == "second":  # the first keeps its three unacked until it goes
                await message.ack()

        await queue.consume(on_message)

    await publish_numbered(setup, unique, 10)
    await wait_until(lambda: len(received["first"]) == 3)
    await asyncio.sleep(0.3)  # the standby must not get any meanwhile
    assert received["second"] == []
    held = {message.body for message in received["first"]}

    await channels["first"].close()  # the standby takes over, with the three it held
    await wait_until(lambda: len(received["second"]) == 10)
    assert sorted(int(message.body) for message in received["second"]) == list(range(10))
    redelivered = {message.body for message in received["second"] if message.redelivered}
    assert redelivered == held


# ------------------------------------------------------------ streams


@pytest.fixture
async def stream(conn: Connection, unique: str) -> Queue:
    """A stream holding ten messages, b"0" to b"9", on a channel with a prefetch."""
    channel = await conn.channel()
    queue = await channel.declare_queue(unique, durable=True, arguments=STREAM)
    await publish_numbered(channel, unique, 10)
    await channel.set_qos(prefetch_count=100)  # streams deliver only under a prefetch
    return queue


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ("first", list(range(10))),
        ("last", [9]),  # the last chunk: all ten were written at once, nine in it is enough
        ("next", []),
        (6, [6, 7, 8, 9]),
        (datetime.timedelta(minutes=-5), list(range(10))),  # a time before them all
        ("10m", list(range(10))),  # an interval: stored in the last ten minutes
    ],
    ids=["first", "last", "next", "offset", "timestamp", "interval"],
)
async def test_a_stream_is_read_from_the_offset_asked_for(
    stream: Queue, offset: Any, expected: list[int]
) -> None:
    if isinstance(offset, datetime.timedelta):
        offset = datetime.datetime.now(datetime.UTC) + offset  # sent as an AMQP timestamp
    received = await drain(stream, arguments={"x-stream-offset": offset})
    offsets = [message.headers["x-stream-offset"] for message in received]
    bodies = [int(message.body) for message in received]
    if offset == "last":  # the last chunk may hold more than the last message
        assert bodies[-1:] == [9] and bodies == list(range(bodies[0], 10))
    else:
        assert bodies == expected
    assert offsets == bodies  # one message per offset, from 0


async def test_a_stream_callback_consumer_sees_new_messages_after_next(
    conn: Connection, stream: Queue
) -> None:
    received: list[bytes] = []

    async def on_message(message: IncomingMessage) -> None:
        received.append(message.body)
        await message.ack()

    await stream.consume(on_message, arguments={"x-stream-offset": "next"})
    publisher = await conn.channel()
    await publisher.default_exchange.publish(Message(b"new"), stream.name)
    await wait_until(lambda: received == [b"new"])


async def test_a_stream_consumer_without_prefetch_is_refused_on_its_channel(
    conn: Connection, unique: str
) -> None:
    channel = await conn.channel()
    queue = await channel.declare_queue(unique, durable=True, arguments=STREAM)
    with pytest.raises(ChannelPreconditionFailed, match="prefetch"):
        await queue.consume(lambda message: None)
    assert channel.is_closed and not conn.is_closed


@pytest.mark.parametrize("call", ["consume with no_ack", "get"])
async def test_what_a_stream_cannot_do_closes_the_connection_with_a_typed_error(
    conn: Connection, stream: Queue, call: str
) -> None:
    # RabbitMQ answers these with a connection error (540), not a channel error
    with pytest.raises(ConnectionNotImplemented, match="stream"):
        if call == "get":
            await stream.get(timeout=5)
        else:
            await stream.consume(lambda message: None, no_ack=True, timeout=5)
    await wait_until(lambda: conn.is_closed)
