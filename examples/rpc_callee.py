"""The serving side of RPC: registers ``multiply`` and ``divide`` and answers calls.

Run: python examples/rpc_callee.py [URL] [CALLS]

It stops after answering CALLS calls (default 6); run examples/rpc_caller.py
with CALLS - 1 to make them.
"""

from __future__ import annotations

import asyncio
import sys

import amqpfast
from amqpfast.patterns import RPC


async def main(url: str, calls: int) -> int:
    served = 0
    enough = asyncio.Event()

    def count() -> None:
        nonlocal served
        served += 1
        if served == calls:
            enough.set()

    # RPC functions take keyword arguments only
    async def multiply(*, x: int, y: int) -> int:
        print(f" [.] multiply(x={x}, y={y})", flush=True)
        count()
        return x * y

    async def divide(*, x: float, y: float) -> float:
        print(f" [.] divide(x={x}, y={y})", flush=True)
        count()
        return x / y  # y=0: the ZeroDivisionError goes back to the caller

    connection = await amqpfast.connect(url)
    async with connection:
        channel = await connection.channel()
        rpc = await RPC.create(channel)
        await rpc.register("multiply", multiply, auto_delete=True)
        await rpc.register("divide", divide, auto_delete=True)
        print(" [x] Awaiting RPC requests", flush=True)

        await asyncio.wait_for(enough.wait(), 60)
        await asyncio.sleep(0.1)  # let the last reply go out
        await rpc.close()
    print(f" [x] Served {served} calls", flush=True)
    return served


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        main(
            arguments[0] if arguments else "amqp://guest:guest@127.0.0.1/",
            int(arguments[1]) if len(arguments) > 1 else 6,
        )
    )
