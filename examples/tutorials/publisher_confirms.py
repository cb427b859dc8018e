"""Tutorial 7, "Publisher Confirms": three ways to wait for the broker's confirms, timed.

Run: python examples/tutorials/publisher_confirms.py [--url URL] [--messages N]
                                                     [--batch-size B]

With confirms on (the channel's default), the broker acknowledges each
message once it has taken responsibility for it. The strategies publish N
messages (default 10,000) each to a fresh queue and differ in how they wait:

- individually: publish one, wait for its confirm, publish the next;
- in batches: publish B (default 100), wait for the B confirms, go on;
- asynchronously: keep publishing (up to 1,000 unconfirmed) and handle each
  confirm in a callback as it arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

# What a confirmed publish returns: pamqp's Basic.Ack, as with aio-pika.
from pamqp.commands import Basic

from amqpfast import Channel, Exchange, Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"
MAX_OUTSTANDING = 1000  # unconfirmed messages at most, for the asynchronous strategy


class Tally:
    """What the broker answered to the publishes of one strategy."""

    def __init__(self) -> None:
        self.confirmed = 0
        self.failed = 0

    def record(self, outcome: object) -> None:
        # Anything but an ack (DeliveryError for a nack, a returned message,
        # a timeout ...) means the broker did not take the message.
        if isinstance(outcome, Basic.Ack):
            self.confirmed += 1
            return
        self.failed += 1
        if self.failed == 1:  # the first says why; thousands of lines would not
            print(f"     not confirmed: {outcome!r}")


def body(number: int) -> Message:
    return Message(f"message {number}".encode())


async def publish_individually(exchange: Exchange, routing_key: str, count: int) -> Tally:
    tally = Tally()
    for number in range(count):
        try:
            # With confirms, publish() returns only once the broker answered.
            tally.record(await exchange.publish(body(number), routing_key))
        except Exception as error:
            tally.record(error)
    return tally


async def publish_in_batches(
    exchange: Exchange, routing_key: str, count: int, batch_size: int
) -> Tally:
    tally = Tally()
    for start in range(0, count, batch_size):
        batch = range(start, min(start + batch_size, count))
        # The batch goes out back to back; one wait covers all its confirms.
        outcomes = await asyncio.gather(
            *(exchange.publish(body(number), routing_key) for number in batch),
            return_exceptions=True,
        )
        for outcome in outcomes:
            tally.record(outcome)
    return tally


async def publish_asynchronously(
    exchange: Exchange, routing_key: str, count: int, max_outstanding: int
) -> Tally:
    tally = Tally()
    outstanding: set[asyncio.Task[Any]] = set()
    # Bounds the unconfirmed messages (and so the memory they hold).
    window = asyncio.Semaphore(max_outstanding)

    def on_confirm(task: asyncio.Task[Any]) -> None:
        # Runs as each confirm arrives, while later messages are still going out.
        outstanding.discard(task)
        window.release()
        tally.record(task.exception() or task.result())

    for number in range(count):
        await window.acquire()
        task = asyncio.create_task(exchange.publish(body(number), routing_key))
        task.add_done_callback(on_confirm)
        outstanding.add(task)
    # Wait for the last confirms (the callbacks have handled the rest).
    while outstanding:
        await asyncio.wait(set(outstanding))
    return tally


async def run_strategy(
    channel: Channel, name: str, count: int, publish: Callable[[Exchange, str], Awaitable[Tally]]
) -> None:
    # A fresh queue per strategy, named by the broker, so that runs never mix.
    queue = await channel.declare_queue(exclusive=True)
    started = time.perf_counter()
    tally = await publish(channel.default_exchange, queue.name)
    elapsed = time.perf_counter() - started
    # A passive declare reads the queue's message count (a plain one would be
    # refused: the name the broker gave starts with the reserved "amq.").
    declared = await channel.declare_queue(queue.name, passive=True)
    assert declared.declaration_result is not None
    held = declared.declaration_result.message_count
    await queue.delete(if_unused=False, if_empty=False)
    print(
        f" [x] {name}: published {count} messages, {tally.confirmed} confirmed, "
        f"{tally.failed} not confirmed, {held} in the queue, in {elapsed * 1000:.0f} ms"
    )


async def main(url: str, count: int, batch_size: int) -> None:
    async with await connect(url) as connection:
        # publisher_confirms=True is the default; said here because it is the point.
        channel = await connection.channel(publisher_confirms=True)
        await run_strategy(
            channel,
            "individually",
            count,
            lambda exchange, key: publish_individually(exchange, key, count),
        )
        await run_strategy(
            channel,
            f"in batches of {batch_size}",
            count,
            lambda exchange, key: publish_in_batches(exchange, key, count, batch_size),
        )
        await run_strategy(
            channel,
            "asynchronously",
            count,
            lambda exchange, key: publish_asynchronously(exchange, key, count, MAX_OUTSTANDING),
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Compare three ways to handle confirms.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument(
        "--messages", type=int, default=10_000, help="messages per strategy (default: 10000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=100, help="messages per batch (default: 100)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.url, args.messages, args.batch_size))
