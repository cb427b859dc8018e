"""Tutorial 4, "Routing": send a log line with a severity on the direct exchange "direct_logs".

Run: python examples/tutorials/emit_log_direct.py [--url URL] [--prefix PREFIX]
                                                  [SEVERITY [MESSAGE ...]]

The severity (default: info) is the routing key: only the receivers bound
with that severity get the line.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import ExchangeType, Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, exchange_name: str, severity: str, text: str) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange(exchange_name, ExchangeType.DIRECT)
        # Not mandatory: a severity nobody listens to is dropped, not an error.
        await logs.publish(Message(text.encode()), routing_key=severity, mandatory=False)
        print(f" [x] Sent {severity!r}:{text!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send a log line with a severity.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the exchange's name")
    parser.add_argument("severity", nargs="?", default="info", help="default: info")
    parser.add_argument("message", nargs="*", help="the line (default: Hello World!)")
    args = parser.parse_args()
    text = " ".join(args.message) or "Hello World!"
    asyncio.run(main(args.url, f"{args.prefix}direct_logs", args.severity, text))
