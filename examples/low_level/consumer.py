"""Consume from a queue with the low-level API, without acknowledgements.

Run: python examples/low_level/consumer.py [URL] [QUEUE] [COUNT]
It stops after COUNT messages (default: runs until interrupted).
"""

from __future__ import annotations

import asyncio
import sys

from amqpfast.core import DeliveredMessage, connect


async def main(url: str, queue: str, count: int | None) -> list[bytes]:
    received: list[bytes] = []
    enough = asyncio.Event()

    def on_message(message: DeliveredMessage) -> None:
        print(f" [x] Received message {message!r}")
        print(f"     Message body is: {message.body!r}")
        received.append(message.body)
        if count is not None and len(received) >= count:
            enough.set()

    connection = await connect(url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(queue)
        await channel.basic_consume(queue, on_message, no_ack=True)
        print(f" [*] Waiting for messages on {queue!r}")
        await enough.wait()
    finally:
        await connection.close()
    return received


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        main(
            arguments[0] if arguments else "amqp://guest:guest@127.0.0.1/",
            arguments[1] if len(arguments) > 1 else "hello",
            int(arguments[2]) if len(arguments) > 2 else None,
        )
    )
