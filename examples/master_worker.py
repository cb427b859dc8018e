"""Master/worker: a master sends resize jobs, three workers share them.

Run: python examples/master_worker.py [URL] [JOBS]

Each worker has its own channel with a prefetch of one, so the broker hands a
job to whichever worker is free. The program stops when every job is done.
"""

from __future__ import annotations

import asyncio
import sys

import amqpfast
from amqpfast.patterns import Master, Worker

QUEUE = "resize_image"


async def main(url: str, jobs: int) -> list[str]:
    done: list[str] = []
    all_done = asyncio.Event()

    connection = await amqpfast.connect(url)
    async with connection:
        workers: list[Worker] = []
        for number in range(3):
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1)

            # the worker number is bound now, the job's arguments come by keyword
            async def resize(*, image: str, size: int, worker: int = number) -> None:
                await asyncio.sleep(0.01)  # the work
                print(f" [worker {worker}] resized {image} to {size}px", flush=True)
                done.append(image)
                if len(done) == jobs:
                    all_done.set()

            worker = await Master(channel).create_worker(QUEUE, resize, auto_delete=True)
            workers.append(worker)

        master = Master(await connection.channel())
        for number in range(jobs):
            image = f"photo-{number}.png"
            # proxy.<queue>(**kwargs) publishes one persistent job
            await master.proxy.resize_image(image=image, size=128)
            print(f" [master] sent {image}", flush=True)

        await asyncio.wait_for(all_done.wait(), 30)
        for worker in workers:
            await worker.close()
    print(f" [x] {len(done)} jobs done", flush=True)
    return done


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        main(
            arguments[0] if arguments else "amqp://guest:guest@127.0.0.1/",
            int(arguments[1]) if len(arguments) > 1 else 10,
        )
    )
