"""package.sh's smoke test: publish, get and ack one message with the installed amqpfast.

    python scripts/package_smoke.py c|python     # the codec implementation expected

AMQP_URL names the broker.
"""

import asyncio
import os
import sys

import amqpfast
import amqpfast.codec


async def main() -> None:
    assert sys.argv[1] == amqpfast.codec.IMPLEMENTATION, amqpfast.codec.IMPLEMENTATION
    connection = await amqpfast.connect(os.environ["AMQP_URL"], timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        body = os.urandom(32)
        await channel.default_exchange.publish(
            amqpfast.Message(body, content_type="application/octet-stream"),
            routing_key=queue.name,
        )
        message = None
        for _ in range(50):
            message = await queue.get(fail=False, timeout=5)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None, "no message"
        assert message.body == body, message.body
        await message.ack()
        print(f"smoke ok: published, got and acked on {queue.name} ({sys.argv[1]} codec)")


asyncio.run(asyncio.wait_for(main(), 60))
