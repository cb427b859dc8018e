"""Tutorial 3, "Publish/Subscribe": broadcast a log line on the fanout exchange "logs".

Run: python examples/tutorials/emit_log.py [--url URL] [--prefix PREFIX] [MESSAGE ...]

Every receive_logs.py running at the time gets the line; with none running
it is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import ExchangeType, Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, exchange_name: str, text: str) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange(exchange_name, ExchangeType.FANOUT)
        # A fanout exchange ignores the routing key; not mandatory: with no
        # listener bound the line is simply lost, as a broadcast may be.
        await logs.publish(Message(text.encode()), routing_key="", mandatory=False)
        print(f" [x] Sent {text!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Broadcast a log line on the exchange 'logs'.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the exchange's name")
    parser.add_argument("message", nargs="*", help="the line (default: info: Hello World!)")
    args = parser.parse_args()
    text = " ".join(args.message) or "info: Hello World!"
    asyncio.run(main(args.url, f"{args.prefix}logs", text))
