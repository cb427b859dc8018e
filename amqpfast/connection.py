"""The high-level connection and :func:`connect`, with aio-pika's names and defaults."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from yarl import URL

from .abc import AbstractConnection, SSLOptions, TimeoutType
from .channel import Channel
from .core import Connection as LowLevelConnection
from .tools import CallbackCollection
from .url import mask_password

log = logging.getLogger("amqpfast.connection")

__all__ = ["Connection", "connect", "make_url"]


class Connection(AbstractConnection):
    """A connection to RabbitMQ; :func:`connect` makes and opens one.

    :param url: ``amqp://`` or ``amqps://`` URL with aio-pika's query options.
    :param ssl_context: a TLS context of your own (replaces the URL's TLS options).
    :param client_properties: extra properties shown by the broker.
    """

    CHANNEL_CLASS: type[Channel] = Channel

    def __init__(
        self,
        url: URL | str,
        loop: asyncio.AbstractEventLoop | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_properties: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.url = URL(url)
        self.loop = loop or asyncio.get_running_loop()
        self.ssl_context = ssl_context
        self.client_properties = client_properties
        self.kwargs = kwargs
        self.transport: LowLevelConnection = LowLevelConnection(
            self.url, client_properties=client_properties, ssl_context=ssl_context
        )
        self.close_callbacks = CallbackCollection(self)
        self.connected = asyncio.Event()
        self._closed: asyncio.Future[bool] = self.loop.create_future()
        self._close_called = False

    def __str__(self) -> str:
        return mask_password(self.url)

    def __repr__(self) -> str:
        return f'<{type(self).__name__}: "{self}">'

    @property
    def is_closed(self) -> bool:
        """Closed: by :meth:`close`, the broker or the network."""
        return self._closed.done() or self.transport.is_closed

    @property
    def close_called(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._close_called

    def closed(self) -> asyncio.Future[bool]:
        """An awaitable that finishes (True) when the connection is closed."""
        return asyncio.shield(self._closed)

    async def connect(self, timeout: TimeoutType = None) -> None:
        """Open the connection (TCP or TLS, then the AMQP handshake)."""
        await self.transport.connect(timeout)
        self.transport._closing.add_done_callback(self._on_transport_closed)
        self.connected.set()

    def _on_transport_closed(self, closing: asyncio.Future[None]) -> None:
        self._set_closed(None if closing.cancelled() else closing.exception())

    def _set_closed(self, error: BaseException | None) -> None:
        # once, whether the broker, the network or close() ended it
        if self._closed.done():
            return
        self.connected.clear()
        self._closed.set_result(True)
        self.close_callbacks(error)

    async def ready(self) -> None:
        """Wait until the connection is open."""
        await self.connected.wait()

    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> Channel:
        """A channel; ``await`` it (or ``async with`` it) to open it.

        :param channel_number: a number of your choice (default: the lowest free).
        :param publisher_confirms: each publish waits for the broker's confirm.
        :param on_return_raises: a returned mandatory message fails its publish.
        """
        return self.CHANNEL_CLASS(
            self,
            channel_number=channel_number,
            publisher_confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )

    async def close(self, exc: BaseException | None = None) -> None:
        """Close the connection and every channel on it."""
        self._close_called = True
        await self.transport.close(exc)
        self._set_closed(exc)

    async def update_secret(
        self, new_secret: str, *, reason: str = "", timeout: TimeoutType = None
    ) -> None:
        """Give the broker a new secret (e.g. a refreshed OAuth 2 token)."""
        await self.transport.update_secret(new_secret, reason=reason, timeout=timeout)

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


def make_url(
    url: str | URL | None = None,
    *,
    host: str = "localhost",
    port: int = 5672,
    login: str = "guest",
    password: str = "guest",
    virtualhost: str = "/",
    ssl: bool = False,
    ssl_options: SSLOptions | None = None,
    client_properties: dict[str, Any] | None = None,
    **kwargs: Any,
) -> URL:
    """The URL :func:`connect` uses: ``url``, else one built from the parts.

    ``ssl_options`` and further keyword arguments become query options (a
    bool as 0 or 1), added to ``url`` when it is given.
    """
    options: dict[str, Any] = {**kwargs, **(ssl_options or {})}
    query = {
        key: int(value) if isinstance(value, bool) else value
        for key, value in options.items()
        if value is not None
    }
    if url is not None:
        return URL(url).update_query(query)
    return URL.build(
        scheme="amqps" if ssl else "amqp",
        host=host,
        port=port,
        user=login,
        password=password,
        path="/" + virtualhost,
        query=query,
    )


async def connect(
    url: str | URL | None = None,
    *,
    host: str = "localhost",
    port: int = 5672,
    login: str = "guest",
    password: str = "guest",
    virtualhost: str = "/",
    ssl: bool = False,
    loop: asyncio.AbstractEventLoop | None = None,
    ssl_options: SSLOptions | None = None,
    ssl_context: Any = None,
    timeout: TimeoutType = None,
    client_properties: dict[str, Any] | None = None,
    connection_class: type[Connection] = Connection,
    **kwargs: Any,
) -> Connection:
    """Open a connection, as aio-pika's ``connect`` does.

    :param url: ``amqp://user:password@host:port/vhost?options`` (the parts
        below are used when it is None).
    :param ssl_options: TLS options (cafile, certfile ...) for amqps.
    :param ssl_context: a TLS context of your own.
    :param timeout: seconds for the connection to open.
    :param client_properties: extra properties shown by the broker
        (``connection_name`` names the connection).
    :param kwargs: more URL options (``heartbeat``, ``name`` ...).
    """
    connection = connection_class(
        make_url(
            url,
            host=host,
            port=port,
            login=login,
            password=password,
            virtualhost=virtualhost,
            ssl=ssl,
            ssl_options=ssl_options,
            **kwargs,
        ),
        loop=loop,
        ssl_context=ssl_context,
        client_properties=client_properties,
    )
    await connection.connect(timeout=timeout)
    return connection
