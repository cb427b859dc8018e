"""Tutorial 2, "Work queues": put a task on the durable queue "task_queue".

Run: python examples/tutorials/new_task.py [--url URL] [--prefix PREFIX] [MESSAGE ...]

Each dot in the message stands for a unit of work (see worker.py). The queue
is durable and the message persistent, so the task survives a broker restart.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import DeliveryMode, Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(url: str, queue_name: str, text: str) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(queue_name, durable=True)
        message = Message(text.encode(), delivery_mode=DeliveryMode.PERSISTENT)
        # The channel confirms publishes: once this returns, the broker has the task.
        await channel.default_exchange.publish(message, routing_key=queue_name)
        print(f" [x] Sent {text!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Put a task on the queue 'task_queue'.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the queue's name")
    parser.add_argument("message", nargs="*", help="the task (default: Hello World!)")
    args = parser.parse_args()
    text = " ".join(args.message) or "Hello World!"
    asyncio.run(main(args.url, f"{args.prefix}task_queue", text))
