"""Tutorial 3, "Publish/Subscribe": print every line broadcast on the exchange "logs".

Run: python examples/tutorials/receive_logs.py [--url URL] [--prefix PREFIX] [--count N]

Each receiver has a queue of its own (named by the broker, deleted when it
stops) bound to the fanout exchange, so every receiver gets every line. It
stops after N lines (default: runs until interrupted with CTRL+C).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import ExchangeType, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, exchange_name: str, count: int | None) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange(exchange_name, ExchangeType.FANOUT)
        # No name: the broker picks a fresh one; exclusive: it goes with our connection.
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(logs)
        received = 0
        async with queue.iterator() as messages:
            # Bound and consuming: from now on no line is missed.
            print(" [*] Waiting for logs. To exit press CTRL+C")
            async for message in messages:
                async with message.process():
                    print(f" [x] {message.body.decode()!r}")
                received += 1
                if received == count:
                    break


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the lines broadcast on 'logs'.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the exchange's name")
    parser.add_argument("--count", type=int, help="stop after this many lines")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url, f"{args.prefix}logs", args.count))
    except KeyboardInterrupt:
        print(" [*] Interrupted")
