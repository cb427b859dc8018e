"""Fault injection for the integration tests: rabbitmqctl and a TCP proxy.

The proxy is :class:`amqpfast.testing.TCPProxy`, re-exported here.

The shared broker is never stopped or reconfigured: a test closes its own
connections with ``rabbitmqctl close_connection`` or breaks them in a proxy
that sits between the client and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

# The proxy lives in the package, for users' tests too; the suite imports it from here.
from amqpfast.testing.proxy import TCPProxy as TCPProxy

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 5672


def free_port() -> int:
    """A TCP port nothing listens on (for a broker that is not there yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port that refuses connections for as long as the block runs.

    The socket is bound but not listening, so no other test can take the
    port meanwhile (a merely free port may become someone's proxy).
    """
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """Run rabbitmqctl and return its output; a failure raises with the output."""
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return done.stdout


def connections_named(name: str) -> list[str]:
    """The broker's pids of the connections whose client gave this name."""
    # The tab-separated listing keeps the full pid (node included), which
    # close_connection needs; the JSON one does not.
    listing = rabbitmqctl("list_connections", "pid", "client_properties", "-q")
    marker = f'{{"connection_name","{name}"}}'
    return [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if "\t" in line and marker in line.split("\t", 1)[1]
    ]


def close_connections_named(name: str, reason: str = "closed by the test") -> int:
    """Close (as an operator would) every connection with this name; return how many."""
    pids = connections_named(name)
    for pid in pids:
        rabbitmqctl("close_connection", pid, reason)
    return len(pids)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (TimeoutError after ``timeout``): no sleep-then-assert."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def wait_for_connection_named(name: str, timeout: float = 10.0) -> None:
    """Wait until the broker lists a connection with this name."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(connections_named, name):
        if loop.time() > deadline:
            raise TimeoutError(f"no connection named {name!r} on the broker")
        await asyncio.sleep(0.2)


@contextlib.contextmanager
def loop_exception_log(loop: asyncio.AbstractEventLoop) -> Iterator[list[dict[str, Any]]]:
    """Collect what reaches the loop's exception handler (e.g. 'never retrieved')."""
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)
