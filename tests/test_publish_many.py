"""Exchange.publish_many: a batch of publishes, their confirms awaited together.

Each message must end as ``asyncio.gather`` over ``Exchange.publish`` would
end it: in order, each with its own result or error, none lost.
"""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import TCPProxy, wait_until
from pamqp import commands as spec

import amqpfast
from amqpfast import Channel, Connection, Message
from amqpfast.core import DeliveredMessage
from amqpfast.exceptions import (
    ChannelInvalidStateError,
    DeliveryError,
    EncodeError,
    PublishError,
)


async def _bodies(channel: Channel, queue_name: str, count: int) -> list[bytes]:
    queue = await channel.get_queue(queue_name, ensure=False)
    bodies = []
    for _ in range(count):
        message = await queue.get(timeout=5, no_ack=True)
        bodies.append(message.body)
    assert await queue.get(fail=False) is None  # nothing more
    return bodies


async def test_every_message_is_published_in_order_and_confirmed(conn: Connection):
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)
    messages = [Message(b"%d" % number, headers={"n": number}) for number in range(300)]

    results = await channel.default_exchange.publish_many(messages, queue.name)

    assert len(results) == 300
    assert all(isinstance(result, spec.Basic.Ack) for result in results)
    assert await _bodies(channel, queue.name, 300) == [b"%d" % n for n in range(300)]


async def test_without_confirms_the_results_are_none(conn: Connection):
    channel = await conn.channel(publisher_confirms=False)
    queue = await channel.declare_queue(exclusive=True)

    results = await channel.default_exchange.publish_many(
        (Message(bytes([n])) for n in range(10)), queue.name
    )

    assert results == [None] * 10
    assert await _bodies(channel, queue.name, 10) == [bytes([n]) for n in range(10)]


async def test_an_empty_batch_publishes_nothing(conn: Connection):
    channel = await conn.channel()

    assert await channel.default_exchange.publish_many([], "nowhere") == []


async def test_an_unroutable_message_comes_back_in_its_place(conn: Connection, unique: str):
    channel = await conn.channel()
    exchange = await channel.declare_exchange(unique, auto_delete=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "routed")

    first = await exchange.publish_many([Message(b"a"), Message(b"b")], "routed")
    lost = await exchange.publish_many([Message(b"c")], "unrouted")

    assert all(isinstance(result, spec.Basic.Ack) for result in first)
    assert isinstance(lost[0], DeliveredMessage) and lost[0].body == b"c"


async def test_a_nack_fails_only_its_message(conn: Connection):
    channel = await conn.channel()
    queue = await channel.declare_queue(
        exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    messages = [Message(b"kept"), Message(b"refused"), Message(b"refused too")]

    with pytest.raises(DeliveryError):
        await channel.default_exchange.publish_many(messages, queue.name)
    await queue.purge()
    results = await channel.default_exchange.publish_many(
        messages, queue.name, return_exceptions=True
    )

    assert isinstance(results[0], spec.Basic.Ack)
    assert isinstance(results[1], DeliveryError) and isinstance(results[2], DeliveryError)


async def test_returns_raise_on_a_channel_that_asks_for_it(conn: Connection, unique: str):
    channel = await conn.channel(on_return_raises=True)
    queue = await channel.declare_queue(exclusive=True)
    exchange = channel.default_exchange
    batch = [Message(b"1"), Message(b"2"), Message(b"3")]
    keys = iter([queue.name, unique, queue.name])

    results = await asyncio.gather(
        *[exchange.publish(message, next(keys)) for message in batch], return_exceptions=True
    )
    mixed = await _publish_to_each(exchange, batch, [queue.name, unique, queue.name])

    # the same answers as under gather
    assert [type(r) for r in mixed] == [type(r) for r in results]
    assert isinstance(mixed[1], PublishError)
    assert await _bodies(channel, queue.name, 4) == [b"1", b"3", b"1", b"3"]


async def _publish_to_each(
    exchange: amqpfast.Exchange, messages: list[Message], keys: list[str]
) -> list[object]:
    # one batch per key, answers put back in the messages' order
    answers: list[object] = [None] * len(messages)
    for key in dict.fromkeys(keys):
        places = [n for n, k in enumerate(keys) if k == key]
        results = await exchange.publish_many(
            [messages[n] for n in places], key, return_exceptions=True
        )
        for place, result in zip(places, results, strict=True):
            answers[place] = result
    return answers


async def test_a_message_that_cannot_be_encoded_fails_alone(conn: Connection):
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)
    batch = [Message(b"1"), Message(b"2", headers={"bad": object()}), Message(b"3")]

    with pytest.raises(EncodeError):
        await channel.default_exchange.publish_many(batch, queue.name)
    results = await channel.default_exchange.publish_many(batch, queue.name, return_exceptions=True)

    assert isinstance(results[1], EncodeError)
    assert isinstance(results[0], spec.Basic.Ack) and isinstance(results[2], spec.Basic.Ack)
    # the good ones went out both times, and the channel is fine
    assert await _bodies(channel, queue.name, 4) == [b"1", b"3", b"1", b"3"]


async def test_an_internal_exchange_refuses(conn: Connection, unique: str):
    channel = await conn.channel()
    exchange = await channel.declare_exchange(unique, internal=True, auto_delete=True)

    with pytest.raises(ValueError, match="internal"):
        await exchange.publish_many([Message(b"x")], "")


async def test_a_closed_channel_raises_at_once(conn: Connection):
    channel = await conn.channel()
    exchange = channel.default_exchange
    await channel.close()

    with pytest.raises(ChannelInvalidStateError):
        await exchange.publish_many([Message(b"x")], "q")


async def test_a_stalled_broker_ends_in_timeout_and_the_channel_stays_usable(
    proxy: TCPProxy, amqp_url: str
):
    conn = await amqpfast.connect(proxy.url(amqp_url) + "?heartbeat=0")
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(exclusive=True)
        low = await channel.get_underlay_channel()
        proxy.stall()

        with pytest.raises(TimeoutError):
            await channel.default_exchange.publish_many(
                [Message(b"x") for _ in range(50)], queue.name, timeout=0.3
            )

        assert not channel.is_closed
        # the abandoned confirms are no longer waited for by anyone
        abandoned = list(low._confirms.values())
        assert len(abandoned) == 50 and all(future.cancelled() for future in abandoned)
        proxy.resume()
        results = await channel.default_exchange.publish_many(
            [Message(b"y")], queue.name, timeout=10
        )
        assert isinstance(results[0], spec.Basic.Ack)
        assert low._confirms == {}
    finally:
        await conn.close()


async def test_a_robust_exchange_waits_out_a_reconnect(proxy: TCPProxy, amqp_url: str, unique: str):
    conn = await amqpfast.connect_robust(
        proxy.url(amqp_url) + "?heartbeat=0&reconnect_interval=0.1"
    )
    try:
        channel = await conn.channel()
        channel.recovery_wait = 10  # publishes wait for the channel's recovery
        queue = await channel.declare_queue(unique, auto_delete=False)

        proxy.cut()
        await wait_until(lambda: channel.is_closed)
        results = await channel.default_exchange.publish_many(
            [Message(b"after")], queue.name, timeout=10
        )

        assert isinstance(results[0], spec.Basic.Ack)
        assert await _bodies(channel, queue.name, 1) == [b"after"]
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await conn.close()
