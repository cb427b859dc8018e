"""A TCP proxy between a client and the broker, for fault injection in tests.

It runs in the test's own event loop and can cut, stall and resume the
connections it carries, or inject bytes as if the broker had sent them; the
broker itself is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["DEFAULT_BROKER_HOST", "DEFAULT_BROKER_PORT", "TCPProxy"]

DEFAULT_BROKER_HOST = "127.0.0.1"
DEFAULT_BROKER_PORT = 5672


class TCPProxy:
    """A TCP proxy in the test's own event loop that can cut, stall or slow connections.

    ``stall()`` stops forwarding in both directions while keeping the sockets
    open (a silent peer); ``resume()`` goes on; ``slow()`` forwards in small
    pieces with a pause before each (a slow or lossy link: frames arrive split
    across reads); ``cut()`` drops every proxied connection at once.

    :param target_host: the broker's host.
    :param target_port: the broker's port.
    :param server_ssl: given, the proxy terminates TLS with it (clients use ``amqps``).
    """

    def __init__(
        self,
        target_host: str = DEFAULT_BROKER_HOST,
        target_port: int = DEFAULT_BROKER_PORT,
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
        self._delay = 0.0  # slow(): pause before each piece, and the largest piece
        self._piece: int | None = None
        self.server_ssl = server_ssl  # given: the proxy terminates TLS
        self.peer_certificates: list[dict[str, Any] | None] = []

    async def start(self, port: int = 0) -> TCPProxy:
        """Listen on 127.0.0.1 and forward; return the proxy itself.

        :param port: the port to listen on (0: a free one, then in :attr:`port`).
        """
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", port, ssl=self.server_ssl
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def url(self, vhost_url: str, host: str = "127.0.0.1") -> str:
        """The broker URL ``vhost_url`` rewritten to go through this proxy.

        The credentials, virtual host and query are kept; only the host and
        port change (and the scheme to ``amqps`` when the proxy terminates TLS).

        :param vhost_url: a URL of the broker, e.g. the ``amqp_vhost_url`` fixture.
        :param host: the host name the client should use for the proxy.
        """
        parts = urlsplit(vhost_url)
        userinfo, _, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}@{host}:{self.port}" if userinfo else f"{host}:{self.port}"
        scheme = "amqps" if self.server_ssl is not None else parts.scheme
        return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))

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
                piece = self._piece or len(data)
                for start in range(0, len(data), piece):
                    if self._delay:
                        await asyncio.sleep(self._delay)
                    sink.write(data[start : start + piece])
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

    def slow(self, delay: float, piece: int | None = None) -> None:
        """Forward slowly, in both directions; ``slow(0)`` is full speed again.

        :param delay: seconds to wait before forwarding each piece.
        :param piece: the most bytes forwarded at a time (None: what came in one read).
        """
        if delay < 0 or (piece is not None and piece < 1):
            raise ValueError("delay must be >= 0 and piece >= 1")
        self._delay = delay
        self._piece = piece

    def inject(self, data: bytes) -> None:
        """Send bytes to the clients as if the broker had sent them (use between frames).

        :param data: the raw bytes, e.g. an encoded AMQP frame.
        """
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
        """Drop every connection (those ``cut_clients()`` held too) and stop listening."""
        self.cut()
        for writer in self._held:
            writer.transport.abort()
        self._held.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
