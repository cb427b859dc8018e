"""Fault injection for the integration tests: rabbitmqctl and a TCP proxy.

The shared broker is never stopped or reconfigured: a test closes its own
connections with ``rabbitmqctl close_connection`` or breaks them in a proxy
that sits between the client and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from typing import Any

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


async def wait_for_connection_named(name: str, timeout: float = 10.0) -> None:
    """Wait until the broker lists a connection with this name."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(connections_named, name):
        if loop.time() > deadline:
            raise TimeoutError(f"no connection named {name!r} on the broker")
        await asyncio.sleep(0.2)


class TCPProxy:
    """A TCP proxy in the test's own event loop that can cut or stall connections.

    ``stall()`` stops forwarding in both directions while keeping the sockets
    open (a silent peer); ``resume()`` goes on; ``cut()`` drops every proxied
    connection at once.
    """

    def __init__(
        self,
        target_host: str = BROKER_HOST,
        target_port: int = BROKER_PORT,
        server_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._clients: list[asyncio.StreamWriter] = []
        self._upstreams: list[asyncio.StreamWriter] = []
        self._held: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.server_ssl = server_ssl  # given: the proxy terminates TLS
        self.peer_certificates: list[dict[str, Any] | None] = []

    async def start(self, port: int = 0) -> TCPProxy:
        """Listen (on ``port``, or a free one) and forward."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", port, ssl=self.server_ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, vhost_url: str, host: str = "127.0.0.1") -> str:
        """The broker URL ``vhost_url`` rewritten to go through this proxy."""
        url = vhost_url.replace(f"{BROKER_HOST}:{BROKER_PORT}", f"{host}:{self.port}", 1)
        return url.replace("amqp://", "amqps://", 1) if self.server_ssl else url

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.server_ssl is not None:
            self.peer_certificates.append(writer.get_extra_info("peercert"))
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        self._clients.append(writer)
        self._upstreams.append(up_writer)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await source.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(sink)
            if sink not in self._held:
                with contextlib.suppress(Exception):
                    sink.close()

    def stall(self) -> None:
        """Stop forwarding (the sockets stay open: the peer seems silent)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Forward again."""
        self._flowing.set()

    def inject(self, data: bytes) -> None:
        """Send bytes to the clients as if the broker had sent them (use between frames)."""
        for writer in self._clients:
            if not writer.is_closing():
                writer.write(data)

    def cut_clients(self) -> None:
        """Drop the client sides only: the broker keeps the connections until it
        notices the silence (its own heartbeat timeout), as after a network split."""
        self._held.update(self._upstreams)
        for writer in self._clients:
            writer.transport.abort()

    def cut(self) -> None:
        """Drop every proxied connection (a reset, as a broken network would)."""
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


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
