"""The low-level connection: handshake, channel 0, heartbeats, writes, closing."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import platform
import ssl
from collections.abc import Callable, Coroutine, Generator
from typing import Any, cast

from pamqp import commands as spec
from yarl import URL

from .. import codec
from .._marks import coroutine_function
from .._spec import FRAME_MIN_SIZE
from .._version import __version__
from ..codec import ContentMessage, FrameWriter, MethodFrame
from ..exceptions import (
    SYNTAX_ERROR,
    AMQPConnectionError,
    AMQPError,
    AuthenticationError,
    ConnectionClosed,
    ConnectionProtocolError,
    HeartbeatTimeout,
    IncompatibleProtocolError,
    ProbableAuthenticationError,
    ProtocolError,
    connection_error,
)
from ..url import ConnectionParameters, mask_password, parse_url
from ._drive import CallbackRunner
from .channel import FLUSH_THRESHOLD, Channel
from .protocol import AMQPProtocol

log = logging.getLogger("amqpfast.core")

__all__ = ["Connection", "ConnectionContext", "ConnectionTimeout", "connect"]

# What we ask for when the URL says nothing.
DEFAULT_CHANNEL_MAX = 2047
DEFAULT_FRAME_MAX = 131072
DEFAULT_CONNECT_TIMEOUT = 30.0

_CONNECTION_METHODS = (
    spec.Connection.Start,
    spec.Connection.Secure,
    spec.Connection.Tune,
    spec.Connection.OpenOk,
)


class ConnectionTimeout(AMQPConnectionError, TimeoutError):
    """The connection was not open within the connect timeout."""


def _mechanisms(offered: Any) -> str:
    """The broker's space-separated SASL mechanisms as text.

    They are ASCII names. The codec hands out a long string that is not
    UTF-8 as bytes: from a broken or hostile peer, whose other bytes must
    not fail the decoding; they only make names that match none of ours.
    """
    if isinstance(offered, (bytes, bytearray)):
        return bytes(offered).decode("ascii", "replace")
    return str(offered)


def _negotiate(client: int | None, server: int, default: int) -> int:
    """The lower of two limits, where 0 means "no limit"."""
    wanted = default if client is None else client
    if wanted == 0 or server == 0:
        return max(wanted, server)
    return min(wanted, server)


def _capability(name: str, doc: str) -> property:
    """A property that says whether the broker announced capability ``name``."""

    def announced(connection: Connection) -> bool:
        return bool(connection.server_capabilities.get(name))

    return property(announced, doc=doc)


class Connection:
    """A connection to RabbitMQ speaking AMQP 0-9-1, with channels by number.

    It takes aiormq's arguments and offers aiormq's methods and attributes,
    so code written for ``aiormq.Connection`` runs on it (see
    :mod:`amqpfast.aiormq`).

    :param url: ``amqp://`` or ``amqps://`` URL (see :mod:`amqpfast.url`).
    :param client_properties: extra client properties sent to the broker.
    :param ssl_context: a TLS context of your own (TLS is then used whatever
        the URL's scheme); ``context`` is aiormq's name for it.
    :param loop: the event loop (default: the running one).
    :param max_message_size: the largest message body taken from the broker,
        in bytes (the URL option of that name; default 128 MiB, RabbitMQ's
        own limit; 0 = no limit). A content header that announces more
        closes the connection with :class:`~amqpfast.exceptions.MessageTooLarge`.
    :param parameters: keyword overrides of the URL (``host``, ``port``,
        ``login``, ``password``, ``virtualhost``, ``heartbeat`` ...).
    :raises ValueError: an option has a value it may not have.
    """

    def __init__(
        self,
        url: Any = None,
        *,
        client_properties: dict[str, Any] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        context: ssl.SSLContext | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        max_message_size: int | None = None,
        **parameters: Any,
    ) -> None:
        self.parameters: ConnectionParameters = parse_url(
            url, max_message_size=max_message_size, **parameters
        )
        self._ssl_context = ssl_context or context
        self.loop = loop or asyncio.get_running_loop()
        self._extra_client_properties = client_properties or {}
        self._protocol: AMQPProtocol | None = None
        self._writer = FrameWriter()
        self._flush_scheduled = False
        self._dispatching = False
        self._deferred_runners: list[CallbackRunner] = []  # to step at the end of the read
        self._sent = False
        self._channels: dict[int, Channel] = {}
        self._waiter: asyncio.Future[Any] | None = None
        self._waiting_for: tuple[type, ...] = ()
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._silent_ticks = 0
        self._blocked: asyncio.Future[None] | None = None
        self._close_ok: asyncio.Future[None] | None = None
        self._secret_lock = asyncio.Lock()
        self._closing_started = False
        self._handshaking = False
        self._credentials_sent = False
        self._opened = False
        self._closing: asyncio.Future[None] = self.loop.create_future()
        self.server_properties: dict[str, Any] = {}
        self.heartbeat = 0
        self.frame_max = DEFAULT_FRAME_MAX
        self.channel_max = DEFAULT_CHANNEL_MAX
        self.blocked_callbacks: list[Callable[[Connection, str], Any]] = []
        self.unblocked_callbacks: list[Callable[[Connection], Any]] = []
        # aiormq's: set once the handshake is done
        self.connected = asyncio.Event()
        self.connection_tune = spec.Connection.Tune(
            channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=0
        )
        self._close_reason = (200, "Normal shutdown", 0, 0)

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open" if self.is_opened else "new"
        return f"<Connection {self.parameters} {state}>"

    def __str__(self) -> str:
        return mask_password(self.url)

    @property
    def url(self) -> URL:
        """The URL of the broker (password included: print ``str(connection)``)."""
        return self.parameters.url

    @property
    def timeout(self) -> float:
        """Seconds the connect may take (the URL's ``timeout``, else 30)."""
        timeout = self.parameters.connection_timeout
        return DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout

    @property
    def max_message_size(self) -> int:
        """The largest message body taken from the broker, in bytes (0 = no limit)."""
        return self.parameters.max_message_size

    @property
    def vhost(self) -> str:
        """The virtual host."""
        return self.parameters.virtualhost

    @property
    def channels(self) -> dict[int, Channel]:
        """The open channels by number."""
        return self._channels

    # ------------------------------------------------------------ state

    @property
    def is_opened(self) -> bool:
        """The handshake finished and the connection is not closed."""
        return self._opened and not self.is_closed

    @property
    def closing(self) -> asyncio.Future[None]:
        """Done when the connection is closed, with its error (None for a normal close).

        A shield of the connection's own future: awaiting it with a timeout, or
        cancelling the waiter, does not touch the connection.
        """
        return asyncio.shield(self._closing)

    @property
    def is_closed(self) -> bool:
        """The connection is closed (or closing)."""
        return self._closing.done()

    @property
    def server_capabilities(self) -> dict[str, Any]:
        """The capabilities table the broker announced."""
        capabilities = self.server_properties.get("capabilities", {})
        return capabilities if isinstance(capabilities, dict) else {}

    basic_nack = _capability("basic.nack", "The broker supports Basic.Nack.")
    consumer_cancel_notify = _capability(
        "consumer_cancel_notify", "The broker tells consumers it cancelled them."
    )
    exchange_exchange_bindings = _capability(
        "exchange_exchange_bindings", "The broker binds exchanges to exchanges."
    )
    accept_consumer_cancel_ok = _capability(
        "accept_consumer_cancel_ok",
        "The broker takes a CancelOk in answer to its own Basic.Cancel.",
    )

    @property
    def publisher_confirms(self) -> bool | None:
        """The broker supports publisher confirms (None: it did not say)."""
        supported = self.server_capabilities.get("publisher_confirms")
        return None if supported is None else bool(supported)

    async def ready(self) -> None:
        """Wait until the connection is open and not blocked by the broker."""
        await self.connected.wait()
        await self.wait_unblocked()

    def set_close_reason(
        self,
        reply_code: int = 200,
        reply_text: str = "normally closed",
        class_id: int = 0,
        method_id: int = 0,
    ) -> None:
        """What the Connection.Close that :meth:`close` sends tells the broker."""
        self._close_reason = (reply_code, reply_text, class_id, method_id)

    @property
    def is_blocked(self) -> bool:
        """The broker blocked publishing (Connection.Blocked, e.g. a memory alarm)."""
        return self._blocked is not None

    async def wait_unblocked(self, timeout: float | None = None) -> None:
        """Wait until the broker unblocks the connection (at once if it is not blocked)."""
        if self._blocked is not None:
            await asyncio.wait_for(asyncio.shield(self._blocked), timeout)

    def _check_open(self) -> None:
        if self._closing.done():
            error = self._closing.exception()
            raise error if error is not None else ConnectionClosed(0, "connection is closed")

    # ------------------------------------------------------------ opening

    def _client_properties(self, **extra: Any) -> dict[str, Any]:
        """The client properties of the handshake (aiormq's hook: ``extra`` wins)."""
        properties: dict[str, Any] = {
            "product": "amqpfast",
            "version": __version__,
            "platform": f"Python {platform.python_version()}",
            "information": f"codec: {codec.IMPLEMENTATION}",
            "capabilities": {
                "publisher_confirms": True,
                "consumer_cancel_notify": True,
                "basic.nack": True,
                "connection.blocked": True,
                "authentication_failure_close": True,
                "exchange_exchange_bindings": True,
                "per_consumer_qos": True,
            },
        }
        if self.parameters.name:
            properties["connection_name"] = self.parameters.name
        properties.update(extra)
        return properties

    async def connect(
        self,
        client_properties: dict[str, Any] | float | None = None,
        *,
        timeout: float | None = None,
    ) -> Connection:
        """Open the TCP (or TLS) connection and do the AMQP handshake.

        :param client_properties: client properties for this handshake
            (instead of those given to the constructor), as in aiormq; a
            number here is taken for ``timeout`` (the order before aiormq's).
        :param timeout: seconds for the whole of it (default: the URL's
            ``connection_timeout``, else 30).
        :raises ConnectionTimeout: not open in time.
        :raises AuthenticationError: the broker refused the credentials.
        :raises AMQPConnectionError: the broker cannot be reached or refused us.
        """
        if self.is_opened:
            raise RuntimeError("the connection is open already")
        if isinstance(client_properties, (int, float)):  # connect(timeout), the old order
            client_properties, timeout = None, client_properties
        if client_properties is not None:
            self._extra_client_properties = client_properties
        if timeout is None:
            timeout = self.parameters.connection_timeout
            if timeout is None:
                timeout = DEFAULT_CONNECT_TIMEOUT
        try:
            async with asyncio.timeout(timeout):
                await self._open()
        except TimeoutError:
            self._abort(ConnectionTimeout(f"connection not open within {timeout} s"))
            raise ConnectionTimeout(
                f"connection to {self.parameters} not open within {timeout} s"
            ) from None
        except BaseException as error:
            self._abort(error if isinstance(error, Exception) else ConnectionClosed())
            raise
        return self

    async def _open(self) -> None:
        parameters = self.parameters
        options: dict[str, Any] = {}
        ssl_context = self._ssl_context or parameters.ssl_context()
        if ssl_context is not None:
            options["ssl"] = ssl_context
            options["server_hostname"] = parameters.host
        if parameters.happy_eyeballs_delay is not None:
            options["happy_eyeballs_delay"] = parameters.happy_eyeballs_delay
        if parameters.interleave is not None:
            options["interleave"] = parameters.interleave
        try:
            _, protocol = await self.loop.create_connection(
                lambda: AMQPProtocol(self), parameters.host, parameters.port, **options
            )
        except OSError as error:
            raise AMQPConnectionError(f"cannot connect to {parameters}: {error}") from error
        self._protocol = protocol
        self._handshaking = True
        self._writer.protocol_header()
        self._flush()

        start = await self._expect(spec.Connection.Start)
        server_properties = start.server_properties
        self.server_properties = server_properties if isinstance(server_properties, dict) else {}
        mechanism = parameters.auth
        offered = _mechanisms(start.mechanisms)
        if mechanism not in offered.split():
            raise AuthenticationError(
                f"the broker offers {offered!r}, the client is set to {mechanism!r}"
            )
        self._send_method(
            0,
            spec.Connection.StartOk(
                client_properties=self._client_properties(**self._extra_client_properties),
                mechanism=mechanism,
                response=self._auth_response(),
                locale="en_US",
            ),
        )
        self._credentials_sent = True
        while True:
            method = await self._expect((spec.Connection.Secure, spec.Connection.Tune))
            if isinstance(method, spec.Connection.Tune):
                break
            self._send_method(0, spec.Connection.SecureOk(response=self._auth_response()))
        if 0 < method.frame_max < FRAME_MIN_SIZE:
            # the reader and writer cannot work below the protocol's minimum
            raise ConnectionProtocolError(
                SYNTAX_ERROR,
                f"the broker proposed frame_max {method.frame_max}, below the protocol's"
                f" minimum of {FRAME_MIN_SIZE}",
            )
        self.channel_max = _negotiate(
            parameters.channel_max, method.channel_max, DEFAULT_CHANNEL_MAX
        )
        if self.channel_max == 0:
            self.channel_max = 65535
        self.frame_max = _negotiate(parameters.frame_max, method.frame_max, DEFAULT_FRAME_MAX)
        heartbeat = parameters.heartbeat
        self.heartbeat = method.heartbeat if heartbeat is None else heartbeat
        self._send_method(
            0,
            spec.Connection.TuneOk(
                channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat
            ),
        )
        protocol.reader.frame_max = self.frame_max
        self._writer.frame_max = self.frame_max
        self._send_method(0, spec.Connection.Open(virtual_host=parameters.virtualhost))
        await self._expect(spec.Connection.OpenOk)
        self._handshaking = False
        self._opened = True
        self.connection_tune = spec.Connection.Tune(
            channel_max=self.channel_max, frame_max=self.frame_max, heartbeat=self.heartbeat
        )
        self.connected.set()
        if self.heartbeat > 0:
            self._heartbeat_timer = self.loop.call_later(self.heartbeat / 2, self._heartbeat_tick)
        log.debug("connected to %s (heartbeat %s s)", parameters, self.heartbeat)

    def _auth_response(self) -> str:
        # pamqp types the response as str; the codec takes bytes for a longstr too
        return cast(str, self._auth_bytes())

    def _auth_bytes(self) -> bytes | str:
        parameters = self.parameters
        if parameters.auth == "PLAIN":
            return f"\0{parameters.login}\0{parameters.password}"
        if parameters.auth == "AMQPLAIN":
            # a field table without its length prefix
            table = {"LOGIN": parameters.login, "PASSWORD": parameters.password}
            return codec.encode_table(table)[4:]
        return ""  # EXTERNAL: the TLS client certificate says who we are

    async def _expect(self, expected: type | tuple[type, ...]) -> Any:
        self._check_open()
        self._waiting_for = expected if isinstance(expected, tuple) else (expected,)
        self._waiter = self.loop.create_future()
        try:
            return await self._waiter
        finally:
            self._waiter = None

    # ------------------------------------------------------------ channels

    async def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        frame_buffer_size: int | None = None,
        timeout: float | None = None,
        *,
        on_return_raises: bool = True,
    ) -> Channel:
        """Open a channel (the arguments are aiormq's, in its order).

        :param channel_number: a number of your choice (default: the lowest free one).
        :param publisher_confirms: put the channel in confirm mode: each
            publish waits for the broker's Basic.Ack.
        :param frame_buffer_size: aiormq's; unused (frames are not queued per
            channel here).
        :param timeout: seconds to wait for the broker.
        :param on_return_raises: a returned mandatory message fails its publish
            with :class:`~amqpfast.exceptions.PublishError` (as in aiormq);
            False makes the returned message the publish's result.
        """
        self._check_open()
        if publisher_confirms and self._opened and not self.publisher_confirms:
            raise ValueError("the broker does not support publisher confirms")
        number = self._allocate(channel_number)
        channel = Channel(self, number, publisher_confirms, on_return_raises)
        self._channels[number] = channel
        try:
            await channel.open(timeout)
        except BaseException:
            channel._abandon()  # timed out or cancelled half-way: close it on the broker too
            raise
        return channel

    def _allocate(self, number: int | None) -> int:
        if number is not None:
            if not 1 <= number <= self.channel_max:
                raise ValueError(f"channel number must be 1..{self.channel_max}, not {number}")
            if number in self._channels:
                raise ValueError(f"channel {number} is in use")
            return number
        for candidate in range(1, self.channel_max + 1):
            if candidate not in self._channels:
                return candidate
        raise AMQPConnectionError(f"all {self.channel_max} channels are in use")

    def _release(self, channel: Channel) -> None:
        if self._channels.get(channel.number) is channel:
            del self._channels[channel.number]

    # ------------------------------------------------------------ writing

    def _send_method(self, channel: int, method: Any) -> None:
        self._writer.method(channel, method)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # One write per loop turn for whatever the callbacks queued; during
        # the dispatch of a read, _on_events writes at its end anyway.
        if len(self._writer) >= FLUSH_THRESHOLD:
            self._flush()
        elif not self._flush_scheduled and not self._dispatching:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pieces = self._writer.take()
        protocol = self._protocol
        if not pieces or protocol is None or protocol.transport is None:
            return
        try:
            if len(pieces) == 1:
                protocol.transport.write(pieces[0])
            else:
                protocol.transport.writelines(pieces)
        except RuntimeError:
            # a flush scheduled before the transport closed (on EOF, before
            # connection_lost): uvloop's raises where asyncio's drops the
            # bytes, and nobody is left to read them anyway
            return
        self._sent = True

    async def _drain(self) -> None:
        """Wait while the transport has asked to pause writing."""
        protocol = self._protocol
        if protocol is not None and protocol.paused:
            await protocol.drained()
            self._check_open()

    # ------------------------------------------------------------ reading

    def _on_events(self, events: list[Any]) -> None:
        # One read's frames, in order (one method, inline: it runs per read).
        # The handlers the read brought step at its end, channel by channel,
        # and what they write leaves with the read's own flush.
        channels = self._channels
        self._dispatching = True
        try:
            for event in events:
                kind = type(event)
                if kind is ContentMessage:
                    channel = channels.get(event.channel)
                    if channel is not None:
                        channel._on_content(event)
                elif kind is MethodFrame:
                    if event.channel == 0:
                        self._on_connection_method(event.method)
                    else:
                        channel = channels.get(event.channel)
                        if channel is not None:
                            channel._on_method(event.method)
                elif kind is codec.ProtocolHeader:
                    self._close_with(
                        IncompatibleProtocolError(
                            f"the broker speaks AMQP {event.major}-{event.minor}-{event.revision}"
                        )
                    )
                    break
        finally:
            try:
                if self._deferred_runners:
                    runners, self._deferred_runners = self._deferred_runners, []
                    for runner in runners:
                        runner.run_deferred()
            finally:
                self._dispatching = False
        if self._writer:
            self._flush()

    def defer_runner(self, runner: CallbackRunner) -> bool:
        """During a read, take ``runner``: its handlers step at the end of the read."""
        if not self._dispatching:
            return False
        self._deferred_runners.append(runner)
        return True

    def _on_connection_method(self, method: Any) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and isinstance(method, self._waiting_for):
            waiter.set_result(method)
        elif isinstance(method, spec.Connection.Close):
            self._send_method(0, spec.Connection.CloseOk())
            self._flush()
            if self._handshaking and method.reply_code == 403:
                error: AMQPError = ProbableAuthenticationError(
                    f"({method.reply_code}) {method.reply_text}"
                )
            else:
                error = connection_error(method.reply_code or 0, method.reply_text or "")
            self._close_with(error)
        elif isinstance(method, spec.Connection.CloseOk):
            if self._close_ok is not None and not self._close_ok.done():
                self._close_ok.set_result(None)
        elif isinstance(method, spec.Connection.Blocked):
            log.warning("the broker blocked the connection: %s", method.reason)
            if self._blocked is None:
                self._blocked = self.loop.create_future()
            for callback in list(self.blocked_callbacks):
                self._callback(callback, self, method.reason)
        elif isinstance(method, spec.Connection.Unblocked):
            blocked, self._blocked = self._blocked, None
            if blocked is not None and not blocked.done():
                blocked.set_result(None)
            for unblocked in list(self.unblocked_callbacks):
                self._callback(unblocked, self)
        else:
            # a stray UpdateSecretOk too: update_secret() waits for it like
            # the handshake waits for its methods (the first branch)
            log.warning("unexpected method on channel 0: %r", method)

    def _callback(self, callback: Callable[..., Any], *args: Any) -> None:
        # a failing user callback must not take the connection down with it
        try:
            result = callback(*args)
            if asyncio.iscoroutine(result):
                self.loop.create_task(result)
        except Exception:
            log.exception("callback %r failed", callback)

    def _on_protocol_error(self, error: ProtocolError) -> None:
        if not isinstance(error, AMQPConnectionError):
            # it ends the connection: callers catching connection errors see it too
            cause = error
            error = ConnectionProtocolError(cause.reply_code, cause.message)
            error.__cause__ = cause
        log.error("closing the connection: the broker sent %s", error)
        try:
            self._writer.method(
                0,
                spec.Connection.Close(
                    reply_code=error.reply_code,
                    reply_text=error.reply_text,
                    class_id=0,
                    method_id=0,
                ),
            )
            self._flush()
        finally:
            self._close_with(error)

    def _on_connection_lost(self, exc: Exception | None) -> None:
        if not self._closing.done():
            if self._handshaking and self._credentials_sent:
                error: AMQPError = ProbableAuthenticationError(
                    "the broker closed the connection after the login"
                )
            elif self._handshaking:
                error = AMQPConnectionError("the peer closed the connection before the login")
            else:
                reason = f"connection lost: {exc}" if exc else "connection lost"
                error = ConnectionClosed(0, reason)
            self._close_with(error)
        if self._close_ok is not None and not self._close_ok.done():
            self._close_ok.set_result(None)

    # ------------------------------------------------------------ heartbeats

    def _heartbeat_tick(self) -> None:
        # Ticks come every heartbeat/2 seconds: a heartbeat goes out when
        # nothing else did, and four silent ticks (two intervals) mean a
        # dead peer.
        protocol = self._protocol
        if protocol is None or self._closing.done():
            return
        if protocol.received:
            protocol.received = False
            self._silent_ticks = 0
        else:
            self._silent_ticks += 1
            if self._silent_ticks >= 4:
                self._abort(
                    HeartbeatTimeout(
                        f"no data from the broker for {2 * self.heartbeat} s (heartbeat)"
                    )
                )
                return
        if not self._sent:
            self._writer.heartbeat()
            self._flush()
        self._sent = False
        self._heartbeat_timer = self.loop.call_later(self.heartbeat / 2, self._heartbeat_tick)

    # ------------------------------------------------------------ closing

    def _close_with(self, error: BaseException | None, abort: bool = False) -> None:
        """Mark everything closed with ``error`` and drop the socket.

        :param abort: drop unsent data too: a peer that does not read (a
            blocked broker, a dead link) would keep a graceful close waiting.
        """
        if self._heartbeat_timer is not None:
            self._heartbeat_timer.cancel()
            self._heartbeat_timer = None
        if not self._closing.done():
            if error is None:
                self._closing.set_result(None)
            else:
                self._closing.set_exception(error)
                self._closing.exception()  # retrieved: nobody has to await it
        failure = error if error is not None else ConnectionClosed(0, "connection closed")
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(failure)
        for channel in list(self._channels.values()):
            channel._on_connection_closed(failure)
        self._channels.clear()
        blocked, self._blocked = self._blocked, None
        if blocked is not None and not blocked.done():
            blocked.set_exception(failure)
            blocked.exception()
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            if abort:
                protocol.transport.abort()
            else:
                protocol.transport.close()

    def _abort(self, error: BaseException) -> None:
        self._close_with(error, abort=True)

    async def close(
        self, exc: BaseException | type[BaseException] | None = None, timeout: float | None = 5.0
    ) -> None:
        """Close the connection: Connection.Close, wait for CloseOk, drop the socket.

        :param exc: the exception to mark the connection closed with (None: a
            normal close).
        :param timeout: seconds to wait for the broker's CloseOk.
        """
        if self._closing.done() or self._closing_started:
            if not self._closing.done() and self._close_ok is not None:
                await asyncio.wait({self._close_ok}, timeout=timeout)
            return
        self._closing_started = True
        self._close_ok = self.loop.create_future()
        if isinstance(exc, type):
            exc = exc()
        try:
            if self._opened:
                code, text, class_id, method_id = self._close_reason
                self._writer.method(
                    0,
                    spec.Connection.Close(
                        reply_code=code, reply_text=text, class_id=class_id, method_id=method_id
                    ),
                )
                self._flush()
                await asyncio.wait({self._close_ok}, timeout=timeout)
        finally:
            # Without CloseOk the broker may not be reading at all: do not wait on it.
            self._close_with(exc, abort=self._opened and not self._close_ok.done())

    async def update_secret(
        self, new_secret: str, reason: str = "", timeout: float | None = None
    ) -> spec.Connection.UpdateSecretOk:
        """Give the broker a new secret (an OAuth 2 token) for this connection.

        :param new_secret: the new password or token; later reconnects use it too.
        :param reason: why, for the broker's log.
        :param timeout: seconds to wait for UpdateSecretOk.
        :returns: the broker's UpdateSecretOk.
        """
        async with self._secret_lock:  # one at a time: they share the channel-0 waiter
            self._check_open()
            self.parameters = dataclasses.replace(self.parameters, password=new_secret)
            self._waiting_for = (spec.Connection.UpdateSecretOk,)
            waiter = self._waiter = self.loop.create_future()
            self._send_method(0, spec.Connection.UpdateSecret(new_secret=new_secret, reason=reason))
            try:
                return await asyncio.wait_for(waiter, timeout)
            finally:
                if self._waiter is waiter:
                    self._waiter = None

    async def __aenter__(self) -> Connection:
        if self._protocol is None:
            await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        # as aiormq: an error that ends the block is the connection's close reason
        await self.close(exc if isinstance(exc, Exception) else None)


class ConnectionContext(Coroutine[Any, Any, Connection]):
    """What :func:`connect` returns: await it, or use it with ``async with``.

    ``await connect(url)`` opens the connection and gives it;
    ``async with connect(url) as connection:`` opens it and closes it at the
    end of the block. It is a coroutine too (``asyncio.create_task`` and
    ``asyncio.run`` take it). The :class:`Connection` is made on first use:
    it needs the running loop.
    """

    __slots__ = ("_args", "_connection", "_coroutine", "_kwargs", "_timeout")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None):
        self._args = args
        self._kwargs = kwargs
        self._timeout = timeout
        self._connection: Connection | None = None
        self._coroutine: Coroutine[Any, Any, Connection] | None = None

    @property
    def connection(self) -> Connection:
        """The connection (made, not opened, on first access)."""
        if self._connection is None:
            self._connection = Connection(*self._args, **self._kwargs)
        return self._connection

    async def _open(self) -> Connection:
        return await self.connection.connect(timeout=self._timeout)

    def _running(self) -> Coroutine[Any, Any, Connection]:
        if self._coroutine is None:
            self._coroutine = self._open()
        return self._coroutine

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._running().__await__()

    def send(self, value: Any) -> Any:
        return self._running().send(value)

    def throw(self, *args: Any) -> Any:
        return self._running().throw(*args)

    def close(self) -> None:
        if self._coroutine is not None:
            self._coroutine.close()

    async def __aenter__(self) -> Connection:
        await self._running()
        return self.connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        await self.connection.__aexit__(exc_type, exc, tb)


# a coroutine function in aiormq before 7.1, and it still says it is one
@coroutine_function
def connect(
    url: Any = None, *args: Any, timeout: float | None = None, **kwargs: Any
) -> ConnectionContext:
    """Open a low-level connection (see :class:`Connection` for the arguments).

    :param timeout: seconds for the TCP connect and the handshake.
    :returns: a :class:`ConnectionContext`: ``await`` it for the open
        connection, or use it in ``async with``.
    """
    return ConnectionContext((url, *args), kwargs, timeout)
