"""The two low-level example programs run as users run them, against the broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from amqpfast.core import connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "low_level"


def run_example(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


async def test_publisher_gets_its_hello_world_back(amqp_url):
    done = await asyncio.to_thread(run_example, "publisher.py", amqp_url)

    assert "Got b'Hello World!'" in done.stdout


async def test_consumer_prints_what_was_published(amqp_url, unique):
    consumer = asyncio.create_task(
        asyncio.to_thread(run_example, "consumer.py", amqp_url, unique, "3")
    )
    async with await connect(amqp_url) as conn:
        channel = await conn.channel()
        await channel.queue_declare(unique)  # the consumer declares it too
        for number in range(3):
            await channel.basic_publish(f"message {number}".encode(), routing_key=unique)
        done = await asyncio.wait_for(consumer, 60)
        await channel.queue_delete(unique)

    bodies = [line for line in done.stdout.splitlines() if "Message body is" in line]
    assert bodies == [f"     Message body is: b'message {n}'" for n in range(3)]
