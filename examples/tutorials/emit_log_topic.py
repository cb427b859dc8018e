"""Tutorial 5, "Topics": send a log line on the topic exchange "topic_logs".

Run: python examples/tutorials/emit_log_topic.py [--url URL] [--prefix PREFIX]
                                                 [ROUTING_KEY [MESSAGE ...]]

The routing key is a list of words with dots, e.g. "<facility>.<severity>"
(default: anonymous.info); receivers choose lines by pattern.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import ExchangeType, Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, exchange_name: str, routing_key: str, text: str) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        logs = await channel.declare_exchange(exchange_name, ExchangeType.TOPIC)
        # Not mandatory: a key no pattern matches is dropped, not an error.
        await logs.publish(Message(text.encode()), routing_key=routing_key, mandatory=False)
        print(f" [x] Sent {routing_key!r}:{text!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send a log line with a topic.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the exchange's name")
    parser.add_argument(
        "routing_key", nargs="?", default="anonymous.info", help="default: anonymous.info"
    )
    parser.add_argument("message", nargs="*", help="the line (default: Hello World!)")
    args = parser.parse_args()
    text = " ".join(args.message) or "Hello World!"
    asyncio.run(main(args.url, f"{args.prefix}topic_logs", args.routing_key, text))
