"""Tutorial 1, "Hello World!": print the messages of the queue "hello".

Run: python examples/tutorials/receive.py [--url URL] [--prefix PREFIX] [--count N]

It stops after N messages (default: runs until interrupted with CTRL+C).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, queue_name: str, count: int | None) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name)
        received = 0
        # Leaving the block cancels the consumer and requeues what it fetched
        # but did not hand out, so --count takes exactly N messages.
        async with queue.iterator() as messages:
            print(" [*] Waiting for messages. To exit press CTRL+C")
            async for message in messages:
                async with message.process():
                    print(f" [x] Received {message.body.decode()!r}")
                received += 1
                if received == count:
                    break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the messages of the queue 'hello'.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the queue's name")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url, f"{args.prefix}hello", args.count))
    except KeyboardInterrupt:
        print(" [*] Interrupted")
