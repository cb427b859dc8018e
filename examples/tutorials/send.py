"""Tutorial 1, "Hello World!": send a message to the queue "hello".

Run: python examples/tutorials/send.py [--url URL] [--prefix PREFIX] [MESSAGE ...]

The broker URL comes from --url, else $AMQP_URL, else amqp://guest:guest@127.0.0.1/.
--prefix is put before the queue's name, so that copies can run side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, queue_name: str, text: str) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        # Declaring is idempotent: whichever program starts first creates the queue.
        await channel.declare_queue(queue_name)
        # The default exchange routes by queue name.
        await channel.default_exchange.publish(Message(text.encode()), routing_key=queue_name)
        print(f" [x] Sent {text!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Send a message to the queue 'hello'.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the queue's name")
    parser.add_argument("message", nargs="*", help="the text (default: Hello World!)")
    args = parser.parse_args()
    asyncio.run(main(args.url, f"{args.prefix}hello", " ".join(args.message) or "Hello World!"))
