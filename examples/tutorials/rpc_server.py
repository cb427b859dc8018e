"""Tutorial 6, "RPC": answer fib(n) requests sent to the queue "rpc_queue".

Run: python examples/tutorials/rpc_server.py [--url URL] [--prefix PREFIX] [--count N]

A request's body is n; the answer goes to the request's reply_to queue with
the request's correlation_id. Run several servers to share the load. It stops
after N requests (default: runs until interrupted with CTRL+C).
"""

from __future__ import annotations

import argparse
import asyncio
import os

from amqpfast import IncomingMessage, Message, connect

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


def fib(n: int) -> int:
    """The n-th Fibonacci number: fib(0) = 0, fib(1) = 1."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


async def main(url: str, queue_name: str, count: int | None) -> None:
    async with await connect(url) as connection:
        channel = await connection.channel()
        # One request at a time per server, so that several servers share the load.
        await channel.set_qos(prefetch_count=1)
        queue = await channel.declare_queue(queue_name)

        answered = 0
        enough = asyncio.Event()

        async def on_request(message: IncomingMessage) -> None:
            nonlocal answered
            if answered == count:
                return  # one too many: left unacked, the broker requeues it when we close
            answered += 1
            # A request that fails (say, a body that is not a number) is
            # dropped: sent again it would fail again.
            async with message.process(requeue=False):
                n = int(message.body.decode())
                print(f" [.] fib({n})")
                if message.reply_to is None:
                    print(" [!] No reply_to: nowhere to answer")
                else:
                    answer = Message(str(fib(n)).encode(), correlation_id=message.correlation_id)
                    await channel.default_exchange.publish(answer, routing_key=message.reply_to)
            if answered == count:
                enough.set()

        await queue.consume(on_request)
        print(" [x] Awaiting RPC requests")
        await enough.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Answer fib(n) requests.")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the queue's name")
    parser.add_argument("--count", type=int, help="stop after this many requests")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.url, f"{args.prefix}rpc_queue", args.count))
    except KeyboardInterrupt:
        print(" [*] Interrupted")
