"""A program written for aio-pika 10, unchanged: tests run it on aio-pika and on amqpfast.

The first argument is the broker URL, the second a name prefix; the third,
"amqpfast", installs amqpfast under the name aio_pika before the import.
"""

import sys

if len(sys.argv) > 3 and sys.argv[3] == "amqpfast":
    import amqpfast.compat

    amqpfast.compat.install()

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import QueueEmpty


async def main(url: str, prefix: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        exchange = await channel.declare_exchange(
            f"{prefix}.events", aio_pika.ExchangeType.TOPIC, auto_delete=True
        )
        queue = await channel.declare_queue(f"{prefix}.orders")
        await queue.bind(exchange, routing_key="order.*")

        for number in range(3):
            await exchange.publish(
                aio_pika.Message(
                    body=f"order {number}".encode(),
                    headers={"number": number},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    content_type="text/plain",
                ),
                routing_key=f"order.{number}",
            )

        seen = []
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    seen.append((message.body.decode(), message.headers["number"]))
                if len(seen) == 3:
                    break
        print("iterated", seen)

        done = asyncio.Event()
        got = []

        async def on_message(message: AbstractIncomingMessage) -> None:
            async with message.process():
                got.append(message.routing_key)
                if len(got) == 2:
                    done.set()

        tag = await queue.consume(on_message)
        await channel.default_exchange.publish(aio_pika.Message(b"a"), routing_key=queue.name)
        await exchange.publish(aio_pika.Message(b"b"), routing_key="order.late")
        await asyncio.wait_for(done.wait(), 10)
        await queue.cancel(tag)
        print("consumed", got)

        try:
            await queue.get(timeout=5)
        except QueueEmpty:
            print("empty")
        await queue.delete(if_unused=False, if_empty=False)


asyncio.run(main(sys.argv[1], sys.argv[2]))
