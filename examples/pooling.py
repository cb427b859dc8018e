"""Pools: a few connections, more channels, many concurrent publishers.

Run: python examples/pooling.py [URL] [MESSAGES]

MESSAGES publishers (default 20) share a pool of 10 channels over a pool of
2 connections; then one consumer reads the messages back and the program stops.
"""

from __future__ import annotations

import asyncio
import sys

import amqpfast
from amqpfast import Channel, Connection, Message
from amqpfast.pool import Pool

QUEUE = "pool_queue"


async def main(url: str, messages: int) -> list[str]:
    async def get_connection() -> Connection:
        return await amqpfast.connect(url)

    connection_pool: Pool[Connection] = Pool(get_connection, max_size=2)

    async def get_channel() -> Channel:
        async with connection_pool.acquire() as connection:
            return await connection.channel()

    channel_pool: Pool[Channel] = Pool(get_channel, max_size=10)

    async def publish(number: int) -> None:
        async with channel_pool.acquire() as channel:
            body = f"message {number}"
            await channel.default_exchange.publish(Message(body.encode()), QUEUE)
            print(f" [>] published {body!r}", flush=True)

    received: list[str] = []

    async def consume() -> None:
        async with channel_pool.acquire() as channel:
            queue = await channel.declare_queue(QUEUE, auto_delete=True)
            async with queue.iterator() as iterator:
                async for message in iterator:
                    async with message.process():
                        received.append(message.body.decode())
                        print(f" [<] consumed {received[-1]!r}", flush=True)
                    if len(received) == messages:
                        break

    # leaving the block closes the channels first, then the connections
    async with connection_pool, channel_pool:
        async with channel_pool.acquire() as channel:
            await channel.declare_queue(QUEUE, auto_delete=True)
        await asyncio.gather(*(publish(number) for number in range(messages)))
        await asyncio.wait_for(consume(), 30)
    print(f" [x] {len(received)} messages through the pools", flush=True)
    return received


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        main(
            arguments[0] if arguments else "amqp://guest:guest@127.0.0.1/",
            int(arguments[1]) if len(arguments) > 1 else 20,
        )
    )
