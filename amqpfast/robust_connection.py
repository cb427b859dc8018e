"""connect_robust: a connection that reconnects and restores what was declared on it."""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Sequence
from typing import Any

from yarl import URL

from .abc import AbstractRobustConnection, SSLOptions, TimeoutType
from .connection import Connection, make_url
from .core import Connection as LowLevelConnection
from .exceptions import CONNECTION_EXCEPTIONS, AMQPConnectionError
from .robust_channel import RobustChannel
from .tools import CallbackCollection
from .url import parse_url

log = logging.getLogger("amqpfast.robust")

__all__ = ["RobustConnection", "connect_robust"]


class RobustConnection(Connection, AbstractRobustConnection):
    """A :class:`Connection` that reconnects by itself.

    When the connection is lost, a supervisor task reconnects, waiting
    ``reconnect_interval`` seconds (URL option, default 5) and longer after
    each failed attempt (with jitter, up to ten times the interval), then
    restores every robust channel in this order: channels with their
    publisher-confirm mode and QoS, exchanges, exchange-to-exchange bindings,
    queues (server-named ones get a new name), queue bindings, consumers
    (same tags and callbacks); then it calls ``reconnect_callbacks``.
    :meth:`close` stops it for good.

    ``fail_fast`` (URL option, default true): the first connect raises its
    error; false: it waits until the broker can be reached.

    Given several URLs (the nodes of a cluster), attempts go to each in
    turn; the reconnect options are read from the first one.
    """

    CHANNEL_CLASS = RobustChannel
    BACKOFF_CAP_FACTOR = 10

    def __init__(
        self,
        url: URL | str | Sequence[URL | str],
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        # several URLs (the nodes of a cluster) are tried in turn
        urls = [url] if isinstance(url, (str, URL)) else list(url)
        if not urls:
            raise ValueError("connect_robust needs at least one URL")
        self._urls: list[URL] = [URL(one) for one in urls]
        super().__init__(self._urls[0], loop, **kwargs)
        parameters = parse_url(self.url)
        self.reconnect_interval = parameters.reconnect_interval
        self.fail_fast = parameters.fail_fast
        self.reconnect_callbacks = CallbackCollection(self)
        self.connection_attempt = 0
        self._channels: weakref.WeakSet[RobustChannel] = weakref.WeakSet()
        self._channel_order: list[weakref.ReferenceType[RobustChannel]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._reconnecting = False
        self._connect_timeout: TimeoutType = None

    def __repr__(self) -> str:
        return f'<{type(self).__name__}: "{self}" {len(self._channels)} channels>'

    @property
    def reconnecting(self) -> bool:
        """A reconnect is under way."""
        return self._reconnecting

    def _new_transport(self) -> None:
        # a new low-level connection for every attempt, to the next URL in
        # turn, read again each time (update_secret changes the password)
        self.url = self._urls[(self.connection_attempt - 1) % len(self._urls)]
        self.transport = LowLevelConnection(
            self.url, client_properties=self.client_properties, ssl_context=self.ssl_context
        )

    async def _attempt(self, timeout: TimeoutType) -> None:
        self.connection_attempt += 1
        self._new_transport()
        try:
            await self.transport.connect(timeout)
        except BaseException:
            await self.transport.close()
            raise
        self.transport._closing.add_done_callback(self._on_transport_closed)
        self.connected.set()

    async def connect(self, timeout: TimeoutType = None) -> None:
        """Connect; with ``fail_fast`` off, keep trying until the broker answers."""
        self._connect_timeout = timeout
        failures = 0
        while True:
            try:
                await self._attempt(timeout)
            except CONNECTION_EXCEPTIONS as error:
                failures += 1
                if self._close_called:
                    raise
                if failures % len(self._urls):
                    continue  # the next URL at once
                if self.fail_fast:
                    raise  # each URL failed once
                log.warning("cannot connect to %s: %s; trying again", self, error)
                await asyncio.sleep(self._backoff(failures // len(self._urls) - 1))
                continue
            if self._close_called:  # close() came while connecting
                await self.transport.close()
                raise AMQPConnectionError(f"{self} was closed while connecting")
            break
        if self._supervisor is None:
            self._supervisor = asyncio.ensure_future(self._supervise())

    def _backoff(self, failures: int) -> float:
        interval: float = self.reconnect_interval
        delay: float = min(interval * 2**failures, interval * self.BACKOFF_CAP_FACTOR)
        return delay * random.uniform(0.8, 1.2)

    def _on_transport_closed(self, closing: asyncio.Future[None]) -> None:
        # only the final close ends a robust connection; a lost transport is
        # the supervisor's business
        self.connected.clear()
        if self._close_called:
            super()._on_transport_closed(closing)

    async def _supervise(self) -> None:
        while not self._close_called:
            transport = self.transport
            try:
                await transport.closing
                reason: BaseException | None = None
            except Exception as error:
                reason = error
            if self._close_called:
                return
            log.warning("connection to %s lost (%s): reconnecting", self, reason)
            for channel in self._ordered_channels():
                channel._on_connection_lost()
            await self._reconnect()

    def _ordered_channels(self) -> list[RobustChannel]:
        alive = [channel for ref in self._channel_order if (channel := ref()) is not None]
        self._channel_order = [weakref.ref(channel) for channel in alive]
        return [channel for channel in alive if not channel._gone]

    async def _reconnect(self) -> None:
        self._reconnecting = True
        failures = 0
        try:
            while not self._close_called:
                await asyncio.sleep(self._backoff(failures))
                if self._close_called:
                    return
                try:
                    await self._attempt(self._connect_timeout)
                    await self._restore()
                except CONNECTION_EXCEPTIONS as error:
                    failures += 1
                    log.warning("reconnect attempt %d failed: %s", failures, error)
                    await self.transport.close()
                    continue
                log.info("reconnected to %s after %d failed attempts", self, failures)
                self.reconnect_callbacks()
                return
        finally:
            self._reconnecting = False

    async def _restore(self) -> None:
        channels = self._ordered_channels()
        for channel in channels:
            await channel.restore_channel()
        for channel in channels:
            await channel.restore_exchanges()
        for channel in channels:
            await channel.restore_exchange_bindings()
        for channel in channels:
            await channel.restore_queues()
        for channel in channels:
            await channel.restore_queue_bindings()
        for channel in channels:
            await channel.restore_consumers()

    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> RobustChannel:
        """A robust channel; ``await`` it to open it."""
        channel = self.CHANNEL_CLASS(
            self,
            channel_number=channel_number,
            publisher_confirms=publisher_confirms,
            on_return_raises=on_return_raises,
        )
        self._channels.add(channel)
        self._channel_order.append(weakref.ref(channel))
        return channel

    async def update_secret(
        self, new_secret: str, *, reason: str = "", timeout: TimeoutType = None
    ) -> None:
        """Give the broker a new secret; later reconnects log in with it too."""
        self._urls = [url.with_password(new_secret) for url in self._urls]
        self.url = self.url.with_password(new_secret)
        await super().update_secret(new_secret, reason=reason, timeout=timeout)

    async def close(self, exc: BaseException | None = None) -> None:
        """Close for good: no reconnect after this."""
        self._close_called = True
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        for channel in self._ordered_channels():
            channel._close_called = True
            channel._stop_tasks()
        await super().close(exc)


async def connect_robust(
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
    connection_class: type[RobustConnection] = RobustConnection,
    **kwargs: Any,
) -> RobustConnection:
    """Open a robust connection (see :class:`RobustConnection`); arguments as :func:`connect`.

    :param url: one URL, or several (the nodes of a cluster, tried in turn).
    """
    parts: dict[str, Any] = {
        "host": host,
        "port": port,
        "login": login,
        "password": password,
        "virtualhost": virtualhost,
        "ssl": ssl,
        "ssl_options": ssl_options,
        **kwargs,
    }
    if url is None or isinstance(url, (str, URL)):
        urls: URL | list[URL] = make_url(url, **parts)
    else:
        urls = [make_url(one, **parts) for one in url]
    connection = connection_class(
        urls,
        loop=loop,
        ssl_context=ssl_context,
        client_properties=client_properties,
    )
    await connection.connect(timeout=timeout)
    return connection
