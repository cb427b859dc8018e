"""The high-level connection and :func:`connect`, with aio-pika's names and defaults."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Literal, Self

from yarl import URL

from .abc import (
    AbstractConnection,
    ConnectionParameter,
    SSLOptions,
    TimeoutType,
    UnderlayConnection,
)
from .channel import Channel
from .core import Connection as LowLevelConnection
from .exceptions import CONNECTION_EXCEPTIONS, AMQPConnectionError
from .tools import CallbackCollection
from .url import host_urls, mask_password, split_hosts

log = logging.getLogger("amqpfast.connection")

__all__ = [
    "Connection",
    "UnderlayConnection",
    "connect",
    "make_url",
    "parse_bool",
    "parse_int",
    "parse_timeout",
]


def parse_int(value: Any) -> int:
    """A URL option as int (0 when it is not a number)."""
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


_TRUE = frozenset(("true", "yes", "y", "enable", "on", "enabled", "1"))


def parse_bool(value: Any) -> bool:
    """A URL flag: true/yes/y/enable/on/enabled/1 (any case) are true, anything else false."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in _TRUE


def parse_timeout(value: Any) -> int | float:
    """A URL option as seconds: int when whole, else float (0 when not a number)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number: int | float = value
    else:
        try:
            text = str(value)
            number = float(text) if "." in text else int(text)
        except ValueError:
            return 0
    if isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def _event_loop() -> asyncio.AbstractEventLoop:
    # aio-pika lets a connection object be made outside a running loop (to
    # read its parameters, say): the thread's loop then, or a new one
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return asyncio.get_event_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            return loop


class Connection(AbstractConnection):
    """A connection to RabbitMQ; :func:`connect` makes and opens one.

    :param url: ``amqp://`` or ``amqps://`` URL with aio-pika's query
        options; or several hosts (the nodes of a cluster): a URL with a host
        list (``amqp://user:pw@h1:5672,h2:5673,h3/vhost``) or a list of URLs.
        :meth:`connect` tries them in turn (in an order shuffled once when
        ``shuffle`` is on); :attr:`url` is the one in use.
    :param loop: the event loop (default: the running one).
    :param ssl_context: a TLS context of your own (replaces the URL's TLS options).
    :param client_properties: extra properties shown by the broker.
    :param kwargs: values for :attr:`PARAMETERS` (they win over the URL's),
        and ``shuffle`` (wins over the first URL's option of that name).
    :raises ValueError: a host list that cannot be read, or a ``shuffle``
        that is not a boolean.
    """

    CHANNEL_CLASS: type[Channel] = Channel
    # URL options read by this class (more of them are read by amqpfast.url)
    PARAMETERS: tuple[ConnectionParameter, ...] = (
        ConnectionParameter(name="interleave", parser=parse_int, is_kwarg=True),
        ConnectionParameter(name="happy_eyeballs_delay", parser=float, is_kwarg=True),
    )

    transport: UnderlayConnection | None

    def __init__(
        self,
        url: URL | str | Sequence[URL | str],
        loop: asyncio.AbstractEventLoop | None = None,
        ssl_context: ssl.SSLContext | None = None,
        client_properties: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # one URL per host, in the order they are tried (shuffled once here)
        self._urls: list[URL] = host_urls(url, kwargs.get("shuffle"))
        self.url = self._urls[0]
        self.loop = loop or _event_loop()
        self.ssl_context = ssl_context
        self.client_properties = client_properties
        self.kwargs: dict[str, Any] = self._parse_parameters(
            {
                **self.url.query,
                **{key: value for key, value in kwargs.items() if value is not None},
            }
        )
        self.transport = None
        self.close_callbacks: CallbackCollection[Any, ...] = CallbackCollection(self)
        self.connected = asyncio.Event()
        self._closed: asyncio.Future[bool] = self.loop.create_future()
        self._close_called = False
        self._close_in_progress = False
        self._connecting: asyncio.Future[UnderlayConnection] | None = None  # a handshake

    @classmethod
    def _parse_parameters(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        parsed: dict[str, Any] = {}
        for parameter in cls.PARAMETERS:
            value = values.get(parameter.name, parameter.default)
            if parameter.is_kwarg and value is None:
                continue
            parsed[parameter.name] = parameter.parse(value)
        return parsed

    def __str__(self) -> str:
        return mask_password(self.url)

    def __repr__(self) -> str:
        return f'<{type(self).__name__}: "{self}">'

    @property
    def connection(self) -> LowLevelConnection:
        """The low-level connection (:class:`amqpfast.core.Connection`) under this one.

        :raises RuntimeError: not connected.
        """
        transport = self.transport
        if transport is None:
            raise RuntimeError(f"{self!r} is not connected")
        return transport.connection

    @property
    def is_closed(self) -> bool:
        """Closed: by :meth:`close`, the broker or the network."""
        return self._closed.done()

    @property
    def close_called(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._close_called

    def closed(self) -> Awaitable[Literal[True]]:
        """An awaitable that finishes (True) when the connection is closed.

        Cancelling it (or a timeout around it) does not touch the connection.
        """
        return asyncio.shield(self._closed)  # type: ignore[arg-type]

    async def connect(self, timeout: TimeoutType = None) -> None:
        """Open the connection (TCP or TLS, then the AMQP handshake).

        Given several hosts, they are tried in turn until one connects; the
        error of the last one is raised if none does (with a note for each
        host tried before it).

        :param timeout: seconds for each host (the connect and the handshake).
        :raises AMQPConnectionError: no host could be reached, or
            :meth:`close` was called meanwhile.
        """
        failures: list[str] = []
        urls = self._urls_to_try()
        for index, url in enumerate(urls):
            self.url = url
            try:
                await self._connect_url(timeout)
                return
            except CONNECTION_EXCEPTIONS as error:
                if self._close_called or index == len(urls) - 1:
                    for failure in failures:
                        error.add_note(failure)
                    raise
                failures.append(f"tried before: {self}: {type(error).__name__}: {error}")
                log.info("cannot connect to %s (%s); trying the next host", self, error)

    def _urls_to_try(self) -> list[URL]:
        # what one connect() goes through: every host in turn
        return self._urls

    async def _connect_url(self, timeout: TimeoutType) -> None:
        # one attempt, to self.url
        # a task of its own, so that close() can stop a handshake that stalls
        attempt = self._connecting = asyncio.ensure_future(
            UnderlayConnection.connect(
                self.url,
                self._on_connection_close,
                timeout=timeout,
                client_properties=self.client_properties,
                ssl_context=self.ssl_context,
            )
        )
        try:
            transport = await attempt
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._close_called and not (current and current.cancelling()):
                raise AMQPConnectionError(f"{self} was closed while connecting") from None
            raise
        finally:
            self._connecting = None
        if self._close_called:  # close() came as the handshake finished
            await transport.connection.close()
            raise AMQPConnectionError(f"{self} was closed while connecting")
        self.transport = transport
        self.connected.set()

    async def _on_connection_close(self, closing: asyncio.Future[None]) -> None:
        self._set_closed(None if closing.cancelled() else closing.exception())

    def _set_closed(self, error: BaseException | None) -> None:
        # once, whether the broker, the network or close() ended it
        self.connected.clear()
        if self._closed.done():
            return
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
        :raises RuntimeError: the connection was never opened.
        """
        if self.transport is None and not self._close_called:
            raise RuntimeError("Connection was not opened")
        return self.CHANNEL_CLASS(
            self,
            channel_number=channel_number,
            publisher_confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )

    async def close(self, exc: BaseException | None = None) -> None:
        """Close the connection and every channel on it.

        Safe to call more than once, before :meth:`connect` or after it
        failed. A call made while another is closing returns at once.
        """
        if self._close_in_progress:
            return
        self._close_in_progress = True
        self._close_called = True
        transport, self.transport = self.transport, None
        try:
            connecting = self._connecting
            if connecting is not None:
                connecting.cancel()  # the handshake's own cleanup closes its socket
                await asyncio.gather(connecting, return_exceptions=True)
            if transport is not None:
                await transport.close(exc)
            self._set_closed(exc)
        finally:
            self._close_in_progress = False

    async def update_secret(
        self, new_secret: str, *, reason: str = "", timeout: TimeoutType = None
    ) -> None:
        """Give the broker a new secret (e.g. a refreshed OAuth 2 token)."""
        await self.connection.update_secret(new_secret, reason=reason, timeout=timeout)
        self._urls = [url.with_password(new_secret) for url in self._urls]
        self.url = self.url.with_password(new_secret)

    async def __aenter__(self) -> Self:
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
    bool as 0 or 1), added to ``url`` when it is given. ``url`` has one
    host (see :func:`amqpfast.url.split_hosts` for a host list).
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


def _make_urls(url: str | URL | Sequence[str | URL] | None, **parts: Any) -> list[URL]:
    """:func:`make_url` of each host of ``url`` (one URL, a host list or a list of URLs)."""
    if url is None:
        return [make_url(None, **parts)]
    given = [url] if isinstance(url, (str, URL)) else list(url)
    return [make_url(one, **parts) for entry in given for one in split_hosts(entry)]


async def connect(
    url: str | URL | Sequence[str | URL] | None = None,
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
        below are used when it is None). Several hosts (the nodes of a
        cluster) are tried in turn until one connects: a host list
        (``amqp://user:password@host1:5672,host2:5673,host3/vhost?options``)
        or a list of URLs.
    :param ssl_options: TLS options (cafile, certfile ...) for amqps.
    :param ssl_context: a TLS context of your own.
    :param timeout: seconds for the connection to open (to each host).
    :param client_properties: extra properties shown by the broker
        (``connection_name`` names the connection).
    :param kwargs: more URL options (``heartbeat``, ``name`` ...;
        ``shuffle=True`` tries the hosts in an order shuffled once).
    :raises AMQPConnectionError: no host could be reached (the last host's
        error, of a subclass for a refused login ...).
    :raises ValueError: a URL or an option that cannot be read.
    """
    urls = _make_urls(
        url,
        host=host,
        port=port,
        login=login,
        password=password,
        virtualhost=virtualhost,
        ssl=ssl,
        ssl_options=ssl_options,
        **kwargs,
    )
    connection = connection_class(
        urls[0] if len(urls) == 1 else urls,
        loop=loop,
        ssl_context=ssl_context,
        **({} if client_properties is None else {"client_properties": client_properties}),
        **kwargs,
    )
    await connection.connect(timeout=timeout)
    return connection
