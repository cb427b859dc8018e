"""Tutorial 5, "Topics": print the log lines whose routing key matches a pattern.

Run: python examples/tutorials/receive_logs_topic.py [--url URL] [--prefix PREFIX]
                                                     [--count N] BINDING_KEY [BINDING_KEY ...]

In a binding key "*" stands for exactly one word and "#" for zero or more:
"kern.*" gets every line of the kernel, "*.critical" every critical line and
"#" everything. It stops after N lines (default: runs until interrupted).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import ExchangeType, IncomingMessage, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, exchange_name: str, binding_keys: list[str], count: int | None) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange(exchange_name, ExchangeType.TOPIC)
        queue = await channel.declare_queue(exclusive=True)
        for binding_key in binding_keys:
            await queue.bind(logs, routing_key=binding_key)

        received = 0
        enough = asyncio.Event()

        async def on_message(message: IncomingMessage) -> None:
            nonlocal received
            if received == count:
                return  # one too many: left unacked, it goes with the exclusive queue
            received += 1
            async with message.process():
                print(f" [x] {message.routing_key!r}:{message.body.decode()!r}")
            if received == count:
                enough.set()

        await queue.consume(on_message)
        print(" [*] Waiting for logs. To exit press CTRL+C")
        await enough.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the log lines matching patterns.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the exchange's name")
    parser.add_argument("--count", type=int, help="stop after this many lines")
    parser.add_argument("binding_key", nargs="+", help='e.g. "kern.*", "*.critical", "#"')
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url, f"{args.prefix}topic_logs", args.binding_key, args.count))
    except KeyboardInterrupt:
        print(" [*] Interrupted")
