"""Publish "Hello World!" and fetch it back with basic_get, using the low-level API.

Run: python examples/low_level/publisher.py [URL]
"""

from __future__ import annotations

import asyncio
import sys

from amqpfast.codec import BasicProperties
from amqpfast.core import connect


async def main(url: str) -> bytes:
    connection = await connect(url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(auto_delete=True)
        queue = str(declared.queue)  # the name the broker chose

        # with publisher confirms (the default) this returns the broker's Basic.Ack
        await channel.basic_publish(
            b"Hello World!",
            routing_key=queue,
            properties=BasicProperties(content_type="text/plain"),
        )

        message = await channel.basic_get(queue)
        print(f" [x] Got {message.body!r} from {queue!r}")
        if message.delivery_tag is not None:  # None: the queue was empty
            await channel.basic_ack(message.delivery_tag)
        return message.body
    finally:
        await connection.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1/"))
