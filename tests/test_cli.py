"""The amqpfast command line, run as a user runs it, against the broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from amqpfast.core import connect


def amqpfast(*arguments: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "amqpfast", *arguments],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


async def test_publish_then_consume_as_json(amqp_url, unique):
    async with await connect(amqp_url) as conn:
        channel = await conn.channel()
        await channel.queue_declare(unique)

        published = await asyncio.to_thread(
            amqpfast, "--url", amqp_url, "publish", "-r", unique, "hello",
            "-p", "content_type=text/plain", "-H", "retry=3", "-H", "who=tests", "--persistent",
        )  # fmt: skip
        from_stdin = await asyncio.to_thread(
            amqpfast, "--url", amqp_url, "publish", "-r", unique, stdin=b"\xff\x00 raw"
        )
        consumed = await asyncio.to_thread(
            amqpfast, "--url", amqp_url, "consume", unique, "--count", "2", "--json",
            "--timeout", "30",
        )  # fmt: skip
        left = await channel.queue_declare(unique, passive=True)
        await channel.queue_delete(unique)

    assert published.returncode == 0, published.stderr
    assert b"Basic.Ack" in published.stderr
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert consumed.returncode == 0, consumed.stderr
    first, second = (json.loads(line) for line in consumed.stdout.splitlines())
    assert first["body"] == "hello"
    assert first["properties"]["content_type"] == "text/plain"
    assert first["properties"]["delivery_mode"] == 2
    assert first["properties"]["headers"] == {"retry": 3, "who": "tests"}
    assert (second["body_encoding"], second["body"]) == ("base64", "/wAgcmF3")
    assert left.message_count == 0  # both were acked


async def test_bench_reports_rates(amqp_url):
    done = await asyncio.to_thread(
        amqpfast, "--url", amqp_url, "bench", "--count", "2000", "--size", "128", "--confirm"
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "amqpfast bench: 2000 x 128 B (with confirms; consume acked)"
    assert lines[1].startswith("publish  2000 messages in ") and "µs/msg" in lines[1]
    assert lines[2].startswith("consume  2000 messages in ") and "msg/s" in lines[2]


async def test_connection_errors_exit_non_zero():
    done = await asyncio.to_thread(
        amqpfast, "--url", "amqp://guest:guest@127.0.0.1:1/", "publish", "x"
    )

    assert done.returncode == 1
    assert b"AMQPConnectionError" in done.stderr
