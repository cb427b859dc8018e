"""Faults while work is under way: operator closes, blocked connections, secrets."""

from __future__ import annotations

import asyncio
import gc

import pytest
from broker_tools import (
    close_connections_named,
    loop_exception_log,
    wait_for_connection_named,
    wait_until,
)
from pamqp import commands as spec

from amqpfast.codec import FrameWriter
from amqpfast.core import DeliveredMessage, connect
from amqpfast.exceptions import ChannelInvalidStateError, ConnectionForced


async def test_operator_close_while_publishing_with_confirms(amqp_url, unique):
    conn = await connect(f"{amqp_url}?name={unique}")
    channel = await conn.channel()
    queue = (await channel.queue_declare("", exclusive=True)).queue
    published = 0

    async def publish_forever() -> None:
        nonlocal published
        while True:
            await asyncio.gather(
                *(channel.basic_publish(b"x" * 64, routing_key=queue) for _ in range(100))
            )
            published += 100

    with loop_exception_log(asyncio.get_running_loop()) as problems:
        publisher = asyncio.ensure_future(publish_forever())
        while published < 1000:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(close_connections_named, unique)
        with pytest.raises((ConnectionForced, ChannelInvalidStateError)):
            await asyncio.wait_for(publisher, 10)
        with pytest.raises(ConnectionForced):
            await conn.closing
        gc.collect()  # a future that failed unseen would complain now
        await asyncio.sleep(0)
    assert problems == []


async def test_operator_close_while_consuming(amqp_url, unique):
    conn = await connect(f"{amqp_url}?name={unique}")
    channel = await conn.channel(publisher_confirms=False)
    queue = (await channel.queue_declare("", exclusive=True)).queue
    for _ in range(5000):
        await channel.basic_publish(b"y" * 64, routing_key=queue)
    received: list[DeliveredMessage] = []

    async def on_message(message: DeliveredMessage) -> None:
        received.append(message)
        await asyncio.sleep(0)  # a callback that yields: runs on as a task
        await message.channel.basic_ack(message.delivery_tag)

    with loop_exception_log(asyncio.get_running_loop()) as problems:
        await channel.basic_qos(prefetch_count=50)
        await channel.basic_consume(queue, on_message)
        while len(received) < 500:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(close_connections_named, unique)
        with pytest.raises(ConnectionForced):
            await asyncio.wait_for(conn.closing, 10)
        await asyncio.sleep(0.1)  # callbacks still running must end quietly
        gc.collect()
        await asyncio.sleep(0)
    assert problems == []
    assert channel.is_closed


def connection_method_frame(method: object) -> bytes:
    writer = FrameWriter()
    writer.method(0, method)
    return b"".join(writer.take())


async def test_blocked_and_unblocked_are_reported(proxy, amqp_url, unique):
    # The broker blocks publishers on a resource alarm; the shared broker must
    # not be reconfigured, so the proxy plays that part between two frames.
    conn = await connect(proxy.url(amqp_url) + f"?name={unique}&heartbeat=0")
    events: list[str] = []
    conn.blocked_callbacks.append(lambda _conn, reason: events.append(f"blocked: {reason}"))
    conn.unblocked_callbacks.append(lambda _conn: events.append("unblocked"))
    await wait_for_connection_named(unique)

    proxy.inject(connection_method_frame(spec.Connection.Blocked(reason="low on memory")))
    await wait_until(lambda: conn.is_blocked)
    waiter = asyncio.ensure_future(conn.wait_unblocked(timeout=10))
    await asyncio.sleep(0.1)
    assert not waiter.done()

    proxy.inject(connection_method_frame(spec.Connection.Unblocked()))
    await asyncio.wait_for(waiter, 5)

    assert events == ["blocked: low on memory", "unblocked"]
    assert not conn.is_blocked
    await conn.wait_unblocked()  # at once when not blocked
    await conn.close()


async def test_update_secret_keeps_the_connection(amqp_url):
    async with await connect(amqp_url) as conn:
        await conn.update_secret("guest", reason="token rotation", timeout=10)

        assert conn.is_opened
        assert conn.parameters.password == "guest"
        channel = await conn.channel()
        assert (await channel.queue_declare("", exclusive=True)).queue
