"""What a client sees of the broker's resource alarms, on the run's private node.

During a memory or disk alarm RabbitMQ blocks each connection that publishes:
it sends Connection.Blocked and stops reading from it until the alarm is
lifted (Connection.Unblocked). The shared broker cannot be put in an alarm;
the private node (the plugin's ``amqp_private_broker``, booted once) can.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pamqp.commands import Basic

import amqpfast
from amqpfast import Message
from amqpfast.core import Connection, connect
from amqpfast.testing import RabbitNode

pytestmark = pytest.mark.skipif(
    not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(),
    reason="needs Debian's rabbitmq-server installation",
)

WAIT = 20  # seconds for anything the broker does: generous on a busy machine


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("resource", ["memory", "disk"])
async def test_an_alarm_blocks_publishing_until_it_is_lifted(
    amqp_private_broker: RabbitNode, unique: str, resource: str
) -> None:
    node = amqp_private_broker
    alarm = node.memory_alarm() if resource == "memory" else node.disk_alarm()
    async with await connect(node.url) as conn:
        channel = await conn.channel()
        await channel.queue_declare(unique, exclusive=True)
        blocked: list[str] = []
        unblocked: list[Connection] = []
        conn.blocked_callbacks.append(lambda _conn, why: blocked.append(why))
        conn.unblocked_callbacks.append(unblocked.append)

        await conn.wait_unblocked(timeout=1)  # not blocked: returns at once
        async with alarm:
            # the broker blocks a connection when it next publishes
            first = asyncio.ensure_future(channel.basic_publish(b"1", routing_key=unique))
            await wait_until(lambda: conn.is_blocked)
            assert len(blocked) == 1
            assert resource in blocked[0]  # "low on memory", "low on disk"
            second = asyncio.ensure_future(channel.basic_publish(b"2", routing_key=unique))
            waiter = asyncio.ensure_future(conn.wait_unblocked(timeout=WAIT))
            await asyncio.sleep(0.2)  # a moment: nothing may complete during the alarm
            assert not first.done()
            assert not second.done()
            assert not waiter.done()
            assert conn.is_blocked

        await asyncio.wait_for(waiter, WAIT)
        assert not conn.is_blocked
        assert unblocked == [conn]
        assert isinstance(await asyncio.wait_for(first, WAIT), Basic.Ack)
        assert isinstance(await asyncio.wait_for(second, WAIT), Basic.Ack)
        declared = await channel.queue_declare(unique, passive=True)
        assert declared.message_count == 2


async def test_a_publish_timeout_holds_during_an_alarm(
    amqp_private_broker: RabbitNode, unique: str
) -> None:
    node = amqp_private_broker
    async with await amqpfast.connect(node.url, timeout=WAIT) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique, exclusive=True)
        low_level = connection.connection
        async with node.memory_alarm():
            first = asyncio.ensure_future(channel.default_exchange.publish(Message(b"1"), unique))
            await wait_until(lambda: low_level.is_blocked)
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await channel.default_exchange.publish(Message(b"2"), unique, timeout=0.5)
            assert time.monotonic() - started < 1.5
        assert isinstance(await asyncio.wait_for(first, WAIT), Basic.Ack)
        # the channel goes on; the message that timed out was never sent
        await channel.default_exchange.publish(Message(b"3"), unique, timeout=WAIT)
        assert (await queue.declare()).message_count == 2
