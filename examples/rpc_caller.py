"""The calling side of RPC: calls ``multiply`` (served by examples/rpc_callee.py).

Run: python examples/rpc_caller.py [URL] [CALLS]

It makes CALLS multiplications (default 5), then one division by zero to
show a remote exception raised here.
"""

from __future__ import annotations

import asyncio
import sys

import amqpfast
from amqpfast.patterns import RPC


async def main(url: str, calls: int) -> list[int]:
    results: list[int] = []
    connection = await amqpfast.connect(url)
    async with connection:
        channel = await connection.channel()
        rpc = await RPC.create(channel)

        for number in range(calls):
            # proxy.<method>(**kwargs) is rpc.call("<method>", kwargs=...);
            # expiration: fail if no callee takes the call within 10 s
            result = await rpc.call("multiply", {"x": number, "y": number + 1}, expiration=10)
            print(f" [x] multiply(x={number}, y={number + 1}) = {result}", flush=True)
            results.append(result)

        try:
            await rpc.proxy.divide(x=1, y=0)
        except ZeroDivisionError as error:
            print(f" [x] divide(x=1, y=0) raised ZeroDivisionError: {error}", flush=True)

        await rpc.close()
    return results


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        main(
            arguments[0] if arguments else "amqp://guest:guest@127.0.0.1/",
            int(arguments[1]) if len(arguments) > 1 else 5,
        )
    )
