"""Publish inside AMQP transactions: one batch committed, one rolled back.

Run: python examples/transaction_publisher.py [--url URL] [--prefix PREFIX]

``async with channel.transaction():`` commits what was published in the block
when it ends, and rolls it back when the block raises. The program then reads
the queue "transactions" back: only the committed batch is there. (Publisher
confirms are the faster way to make publishes safe; transactions make a batch
all-or-nothing.)
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


class ChangedMyMind(Exception):
    """Raised to leave the second transaction, which rolls it back."""


async def main(url: str, queue_name: str) -> None:
    async with await connect(url) as connection:
        # RabbitMQ refuses transactions on a channel in confirm mode.
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(queue_name)
        await queue.purge()  # whatever an interrupted run left there would blur the result

        committed = ["committed 1", "committed 2", "committed 3"]
        async with channel.transaction():
            for text in committed:
                await channel.default_exchange.publish(Message(text.encode()), queue_name)
        print(f" [x] Committed {len(committed)} messages: {committed!r}")

        rolled_back = ["rolled back 1", "rolled back 2"]
        try:
            async with channel.transaction():
                for text in rolled_back:
                    await channel.default_exchange.publish(Message(text.encode()), queue_name)
                raise ChangedMyMind
        except ChangedMyMind:
            print(f" [x] Rolled back {len(rolled_back)} messages: {rolled_back!r}")

        # no_ack: acks would be part of the channel's transaction too.
        held: list[str] = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            held.append(message.body.decode())
        print(f" [x] The queue holds {held!r}")
        await queue.delete(if_unused=False, if_empty=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Commit one batch, roll back another.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the queue's name")
    args = parser.parse_args()
    asyncio.run(main(args.url, f"{args.prefix}transactions"))
