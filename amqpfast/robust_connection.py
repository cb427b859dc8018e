"""connect_robust: a connection that reconnects and restores what was declared on it."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import weakref
from collections.abc import Sequence
from typing import Any

from yarl import URL

from .abc import (
    AbstractRobustConnection,
    ConnectionParameter,
    SSLOptions,
    TimeoutType,
    UnderlayConnection,
)
from .connection import Connection, _make_urls, parse_bool, parse_timeout
from .exceptions import CONNECTION_EXCEPTIONS, AMQPChannelError, AMQPConnectionError
from .robust_channel import RobustChannel
from .tools import CallbackCollection

log = logging.getLogger("amqpfast.robust")

__all__ = ["RobustConnection", "connect_robust"]


class RobustConnection(Connection, AbstractRobustConnection):
    """A :class:`Connection` that reconnects by itself.

    When the connection is lost, a supervisor task reconnects: at once, or
    ``reconnect_interval`` seconds (URL option, default 5) after the previous
    attempt if that was more recent, and longer after each failed attempt
    (with jitter, up to ten times the interval); then it
    restores the robust channels one after another, in the order they were
    made (:meth:`RobustChannel.restore`: the channel with its
    publisher-confirm mode and QoS, exchanges, exchange-to-exchange bindings,
    queues (a nameless one is named ``amq_<hex>`` here), queue bindings,
    consumers with the same tags and callbacks); a channel that fails for a
    missing or conflicting entity (perhaps declared on a channel restored
    after it) is tried again after the others, and then after each wait, on
    the same connection, until it succeeds; then ``reconnect_callbacks`` are
    called. ``close_callbacks`` hear of every lost connection and of every
    restore attempt that failed. :meth:`close` stops it for good.

    The same task brings back consumers the broker cancelled (their queue
    was deleted, a consumer timeout): see ``RobustChannel._restore_consumers``.

    ``fail_fast`` (URL option, default true): the first connect raises its
    error; false: it waits until the broker can be reached.

    Given several hosts (the nodes of a cluster: a list of URLs, or a URL
    with a host list ``amqp://user:pw@h1:5672,h2:5673,h3/vhost``), attempts
    go to each in turn, the first connect as well as every reconnect; with
    ``shuffle`` (URL option or keyword) in an order shuffled once. The
    reconnect options are read from the first URL.
    """

    CHANNEL_CLASS = RobustChannel
    BACKOFF_CAP_FACTOR = 10
    # seconds before a channel the broker closed (an error) is opened again
    CHANNEL_REOPEN_PAUSE: float = 1
    PARAMETERS: tuple[ConnectionParameter, ...] = (
        *Connection.PARAMETERS,
        ConnectionParameter(name="reconnect_interval", parser=parse_timeout, default="5"),
        ConnectionParameter(name="fail_fast", parser=parse_bool, default="1"),
    )

    def __init__(
        self,
        url: URL | str | Sequence[URL | str],
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        # several hosts (the nodes of a cluster) are tried in turn: self._urls
        super().__init__(url, loop, **kwargs)
        self.reconnect_interval: float = self.kwargs.pop("reconnect_interval")
        self.fail_fast: bool = self.kwargs.pop("fail_fast")
        self.reconnect_callbacks: CallbackCollection[Any, ...] = CallbackCollection(self)
        self.connection_attempt = 0
        # the robust channels, in the order they were made: the order of a restore
        self.__channels: weakref.WeakKeyDictionary[RobustChannel, None] = (
            weakref.WeakKeyDictionary()
        )
        # the supervisor: reconnects, and brings back cancelled consumers
        self.__reconnection_task: asyncio.Task[None] | None = None
        self.__recovery = asyncio.Event()  # a consumer the broker cancelled waits
        self._reconnecting = False
        self._connect_timeout: TimeoutType = None
        self._reconnect_now = False  # reconnect(): no pause before the first attempt
        self._last_attempt = -math.inf  # loop time of the last connection attempt
        self._reconnected: list[asyncio.Future[None]] = []  # reconnect() callers

    def __repr__(self) -> str:
        return f'<{type(self).__name__}: "{self}" {len(self.__channels)} channels>'

    @property
    def reconnecting(self) -> bool:
        """A reconnect is under way."""
        return self._reconnecting

    async def _attempt(self, timeout: TimeoutType) -> None:
        # a new low-level connection for every attempt, to the next URL in
        # turn, read again each time (update_secret changes the password)
        self.connection_attempt += 1
        self._last_attempt = self.loop.time()
        self.url = self._urls[(self.connection_attempt - 1) % len(self._urls)]
        await Connection.connect(self, timeout)  # (code may patch it, as aio-pika's tests do)

    def _urls_to_try(self) -> list[URL]:
        return [self.url]  # one host per attempt: the supervisor takes the next in turn

    async def connect(self, timeout: TimeoutType = None) -> None:
        """Connect; with ``fail_fast`` off, keep trying until the broker answers."""
        self._connect_timeout = timeout
        failures = 0
        while True:
            if self._close_called:
                raise AMQPConnectionError(f"{self} was closed while connecting")
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
            break
        if self.__reconnection_task is None:
            self.__reconnection_task = asyncio.ensure_future(self.__supervise())

    def _reconnect_delay(self, failures: int) -> float:
        # As in aio-pika, a lost connection is tried again at once, unless the
        # last attempt was less than reconnect_interval ago (a connection that
        # keeps dropping is tried once per interval); failed attempts back off.
        if failures:
            return self._backoff(failures - 1)
        return max(0.0, self._last_attempt + self.reconnect_interval - self.loop.time())

    def _backoff(self, failures: int) -> float:
        interval: float = self.reconnect_interval
        delay: float = min(interval * 2**failures, interval * self.BACKOFF_CAP_FACTOR)
        return delay * random.uniform(0.8, 1.2)

    async def _on_connection_close(self, closing: asyncio.Future[None]) -> None:
        # Every lost transport is told to close_callbacks (as aio-pika does);
        # only the final close marks a robust connection closed. A late
        # callback of an old transport must not mark the new one down.
        error = None if closing.cancelled() else closing.exception()
        if self._close_called:
            await super()._on_connection_close(closing)
            return
        if self._transport_lost():
            self.connected.clear()
        self.close_callbacks(error)

    async def _close_transport(self) -> None:
        transport = self.transport
        if transport is not None:
            await transport.connection.close()

    def _transport_lost(self) -> bool:
        transport = self.transport
        return transport is None or transport.connection.is_closed

    def _request_recovery(self) -> None:
        """Wake the supervisor to bring back consumers the broker cancelled."""
        if not self._close_called and not self.is_closed:
            self.__recovery.set()

    async def __supervise(self) -> None:
        # The connection's one supervisor task: it reconnects when the
        # transport is lost and, while it is up, brings back the consumers
        # the broker cancelled, in one pass over every channel at a time.
        # It ends with close() only: an error of its own (a bug, not the
        # broker's doing) is logged with its traceback and it goes on.
        failures = 0
        while not self._close_called:
            try:
                await self.__watch()
                failures = 0
            except Exception:
                failures += 1
                log.exception("the supervisor of %s failed; going on", self)
                await asyncio.sleep(self._backoff(failures - 1))

    async def __watch(self) -> None:
        # one turn: wait for a loss or a cancelled consumer, then deal with it
        transport = self.transport
        if transport is None:  # lost and not back (an error in a reconnect)
            await self._reconnect()
            return
        closing = transport.connection.closing
        woken = asyncio.ensure_future(self.__recovery.wait())
        try:
            await asyncio.wait((closing, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not closing.done():
                closing.cancel()  # the shield only, not the connection's future
            elif not closing.cancelled():
                closing.exception()  # retrieved: close() may end this turn before it is read
        if self._close_called:
            return
        if not transport.connection.is_closed:
            self.__recovery.clear()
            # cancels come in bursts (queues deleted, a node going
            # down): one pass per reconnect_interval, which also paces
            # the retries of a queue that is not back yet
            if not await self.__lost_within(transport, self.reconnect_interval):
                await self.__recover_consumers()
            return
        reason = None if closing.cancelled() else closing.exception()
        log.warning("connection to %s lost (%s): reconnecting", self, reason)
        self.__recovery.clear()  # the restore brings every consumer back
        for channel in self._ordered_channels():
            channel._on_connection_lost()
        await self._reconnect()

    @staticmethod
    async def __lost_within(transport: UnderlayConnection, seconds: float) -> bool:
        closing = transport.connection.closing
        try:
            await asyncio.wait((closing,), timeout=seconds)
        finally:
            if not closing.done():
                closing.cancel()  # the shield only
            elif not closing.cancelled():
                closing.exception()  # retrieved: the next turn of the loop reports it
        return transport.connection.is_closed

    async def __recover_consumers(self) -> None:
        retry = False
        for channel in self._ordered_channels():
            if self._transport_lost():
                return  # the reconnect restores every consumer
            try:
                retry = await channel._restore_consumers() or retry
            except Exception:
                log.exception("bringing back the consumers of %r failed; trying again", channel)
                retry = True
        if retry:
            self._request_recovery()

    def _ordered_channels(self) -> list[RobustChannel]:
        return [channel for channel in tuple(self.__channels) if not channel._gone]

    async def _reconnect(self) -> None:
        self._reconnecting = True
        failures = 0
        # the channels still to restore on the current transport (None: a
        # new transport, every channel)
        pending: list[RobustChannel] | None = None
        try:
            while not self._close_called:
                if self._reconnect_now:
                    self._reconnect_now = False
                else:
                    await asyncio.sleep(self._reconnect_delay(failures))
                if self._close_called:
                    return
                try:
                    if pending is None or self._transport_lost():
                        pending = None
                        await self._attempt(self._connect_timeout)
                    pending = await self._restore(pending)
                except Exception as error:
                    failures += 1
                    if isinstance(error, CONNECTION_EXCEPTIONS):
                        log.warning("reconnect attempt %d failed: %s", failures, error)
                    else:  # not the broker's or the network's doing: show where
                        log.exception("reconnect attempt %d failed", failures)
                    if not self._transport_lost():
                        self.close_callbacks(error)
                    pending = None
                    await self._close_transport()
                    continue
                if pending:
                    failures += 1
                    continue
                log.info("reconnected to %s after %d failed attempts", self, failures)
                self._wake_reconnect_waiters(None)
                self.reconnect_callbacks()
                return
        finally:
            self._reconnecting = False

    async def _restore(self, channels: list[RobustChannel] | None = None) -> list[RobustChannel]:
        """Restore the channels in turn; return those that failed for a channel error.

        A channel may need what another one declares: those that fail are
        tried again while the others make progress. Connection errors are
        raised.
        """
        pending = self._ordered_channels() if channels is None else channels
        while pending:
            failed: list[RobustChannel] = []
            first_error: AMQPChannelError | None = None
            for channel in pending:
                try:
                    await channel.restore()
                except AMQPChannelError as error:
                    if self._transport_lost():
                        raise
                    failed.append(channel)
                    first_error = first_error or error
                    log.debug("restoring %r failed, trying it again", channel, exc_info=True)
            if failed and len(failed) == len(pending):
                # no progress: the broker has to change first (a queue
                # declared passively is gone, a declaration conflicts)
                log.warning(
                    "%d channel(s) of %s not restored: %s; trying again",
                    len(failed),
                    self,
                    first_error,
                )
                self.close_callbacks(first_error)
                return failed
            pending = failed
        return []

    def _wake_reconnect_waiters(self, error: BaseException | None) -> None:
        waiters, self._reconnected = self._reconnected, []
        for waiter in waiters:
            if waiter.done():
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    async def reconnect(self) -> None:
        """Drop the connection and reconnect now; returns when every channel is restored.

        :raises RuntimeError: the connection was closed (or never connected).
        """
        if self._close_called or self.__reconnection_task is None:
            raise RuntimeError(f"{self!r} is closed or was never connected")
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._reconnected.append(waiter)
        if not self._reconnecting:
            self._reconnect_now = True
            await self._close_transport()
        await waiter

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
        self.__channels[channel] = None
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
        supervisor, self.__reconnection_task = self.__reconnection_task, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        self._wake_reconnect_waiters(RuntimeError(f"{self!r} was closed"))
        for channel in self._ordered_channels():
            channel._close_called = True
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

    :param url: one URL, or several hosts (the nodes of a cluster, tried in
        turn): a list of URLs, or a URL with a host list
        (``amqp://user:pw@h1:5672,h2:5673,h3/vhost?options``).
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
    urls = _make_urls(url, **parts)
    connection = connection_class(
        urls[0] if len(urls) == 1 else urls,
        loop=loop,
        ssl_context=ssl_context,
        **({} if client_properties is None else {"client_properties": client_properties}),
        **kwargs,
    )
    await connection.connect(timeout=timeout)
    return connection
