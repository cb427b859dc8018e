"""Tutorial 6, "RPC": ask rpc_server.py for Fibonacci numbers.

Run: python examples/tutorials/rpc_client.py [--url URL] [--prefix PREFIX]
                                             [--timeout SECONDS] [N ...]

Asks for fib(N) for each N (default: 30), all at once: the answers come back
on one exclusive callback queue and each is matched to its request by the
correlation_id.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

from amqpfast import Channel, IncomingMessage, Message, Queue, connect
from amqpfast.exceptions import PublishError

DEFAULT_URL = "amqp://guest:guest@127.0.0.1/"


class FibonacciRpcClient:
    """Calls fib(n) on the servers listening on ``server_queue``."""

    def __init__(self, channel: Channel, server_queue: str) -> None:
        self.channel = channel
        self.server_queue = server_queue
        self.callback_queue: Queue | None = None
        self.pending: dict[str, asyncio.Future[bytes]] = {}

    async def start(self) -> FibonacciRpcClient:
        # A queue for our answers only, named by the broker, gone with the connection.
        self.callback_queue = await self.channel.declare_queue(exclusive=True)
        await self.callback_queue.consume(self.on_response, no_ack=True)
        return self

    def on_response(self, message: IncomingMessage) -> None:
        # An unknown id is the late answer to a call that timed out: ignore it.
        future = self.pending.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def call(self, n: int, timeout: float) -> int:
        """fib(n), computed by a server.

        :raises TimeoutError: no answer within ``timeout`` seconds.
        """
        assert self.callback_queue is not None, "call start() first"
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.pending[correlation_id] = future
        request = Message(
            str(n).encode(),
            content_type="text/plain",
            correlation_id=correlation_id,
            reply_to=self.callback_queue.name,
        )
        try:
            await self.channel.default_exchange.publish(request, routing_key=self.server_queue)
            return int(await asyncio.wait_for(future, timeout))
        finally:
            self.pending.pop(correlation_id, None)


async def main(url: str, server_queue: str, numbers: list[int], timeout: float) -> int:
    async with await connect(url) as connection:
        # A request no server queue takes comes back and fails its publish at
        # once (PublishError) instead of waiting for the timeout.
        channel = await connection.channel(on_return_raises=True)
        client = await FibonacciRpcClient(channel, server_queue).start()

        async def ask(n: int) -> bool:
            print(f" [x] Requesting fib({n})")
            try:
                result = await client.call(n, timeout)
            except PublishError:
                print(f" [!] fib({n}): no server is listening on {server_queue!r}")
                return False
            except TimeoutError:
                print(f" [!] fib({n}): no answer within {timeout} s")
                return False
            print(f" [.] Got fib({n}) = {result}")
            return True

        answered = await asyncio.gather(*(ask(n) for n in numbers))
    return 0 if all(answered) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Ask the RPC server for fib(n).")
    parser.add_argument(
        "--url",
        default=os.environ.get("AMQP_URL", DEFAULT_URL),
        help="broker URL (default: $AMQP_URL, else the local broker)",
    )
    parser.add_argument("--prefix", default="", help="put before the server queue's name")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each answer (default: 30)"
    )
    parser.add_argument("n", nargs="*", type=int, help="which Fibonacci numbers (default: 30)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url, f"{args.prefix}rpc_queue", args.n or [30], args.timeout)))
