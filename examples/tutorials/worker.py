"""Tutorial 2, "Work queues": do the tasks of "task_queue", one at a time.

Run: python examples/tutorials/worker.py [--url URL] [--prefix PREFIX]
                                         [--idle-timeout SECONDS] [--seconds-per-dot SECONDS]

Start several workers: the broker shares the tasks among them. Each dot of a
task takes --seconds-per-dot (default 1) to "do". A task is acknowledged only
when it is done, so the tasks of a worker that dies go to the others. With
--idle-timeout the worker stops after that long without a task.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


async def main(
    url: str, queue_name: str, idle_timeout: float | None, seconds_per_dot: float
) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        # At most one unacknowledged task per worker: a busy worker gets no
        # new task, so a long task does not hold back the ones behind it.
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(queue_name, durable=True)
        try:
            async with queue.iterator(timeout=idle_timeout) as messages:
                print(" [*] Waiting for messages. To exit press CTRL+C")
                async for message in messages:
                    # Acks when the block ends, rejects if it raises.
                    async with message.process():
                        text = message.body.decode()
                        print(f" [x] Received {text!r}")
                        await asyncio.sleep(text.count(".") * seconds_per_dot)
                        print(" [x] Done")
        except TimeoutError:
            print(f" [*] No task for {idle_timeout} s, stopping")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Do the tasks of the queue 'task_queue'.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the queue's name")
    parser.add_argument(
        "--idle-timeout", type=float, help="stop after this many seconds without a task"
    )
    parser.add_argument(
        "--seconds-per-dot",
        type=float,
        default=1.0,
        help="how long each dot of a task takes (default: 1)",
    )
    args = parser.parse_args()
    try:
        asyncio.run(
            main(args.url, f"{args.prefix}task_queue", args.idle_timeout, args.seconds_per_dot)
        )
    except KeyboardInterrupt:
        print(" [*] Interrupted")
