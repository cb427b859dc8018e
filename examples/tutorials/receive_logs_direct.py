"""Tutorial 4, "Routing": print the log lines of the chosen severities.

Run: python examples/tutorials/receive_logs_direct.py [--url URL] [--prefix PREFIX]
                                                      [--count N] SEVERITY [SEVERITY ...]

The receiver's queue is bound to "direct_logs" once per severity. It stops
after N lines (default: runs until interrupted with CTRL+C).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import ExchangeType, IncomingMessage, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, exchange_name: str, severities: list[str], count: int | None) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange(exchange_name, ExchangeType.DIRECT)
        queue = await channel.declare_queue(exclusive=True)
        for severity in severities:
            await queue.bind(logs, routing_key=severity)

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
    parser = argparse.ArgumentParser(description="Print the log lines of some severities.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the exchange's name")
    parser.add_argument("--count", type=int, help="stop after this many lines")
    parser.add_argument("severity", nargs="+", help="info, warning, error ...")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url, f"{args.prefix}direct_logs", args.severity, args.count))
    except KeyboardInterrupt:
        print(" [*] Interrupted")
