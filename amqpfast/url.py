"""Connection URLs: ``amqp://user:password@host:port/vhost?option=value``.

The query options are aio-pika's: ``name``, ``cafile``, ``capath``,
``cadata``, ``keyfile``, ``certfile``, ``no_verify_ssl``, ``heartbeat``,
``interleave``, ``happy_eyeballs_delay``, ``reconnect_interval`` and
``fail_fast``; and ``frame_max``, ``channel_max``, ``auth``,
``connection_timeout`` (also spelt ``timeout``), ``max_message_size`` and
``shuffle``.

The nodes of a cluster fit in one URL,
``amqp://user:password@host1:5672,host2:5673,host3/vhost?options``:
:func:`split_hosts` makes one URL per host of it (with the same user,
virtual host and options), :func:`host_urls` the list a connection tries in
turn (shuffled once with ``shuffle``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import ssl as _ssl
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

from yarl import URL

from ._spec import FRAME_MIN_SIZE, MAX_MESSAGE_SIZE_DEFAULT

__all__ = [
    "ConnectionParameters",
    "host_urls",
    "mask_password",
    "parse_bool",
    "parse_url",
    "split_hosts",
]

_TRUE = frozenset(("true", "yes", "y", "enable", "on", "enabled", "1"))
_FALSE = frozenset(("false", "no", "n", "disable", "off", "disabled", "0", ""))
AUTH_MECHANISMS = ("PLAIN", "AMQPLAIN", "EXTERNAL")


def parse_bool(value: str | bool | int) -> bool:
    """Read a URL flag: true/yes/y/enable/on/enabled/1 are true (any case)."""
    if isinstance(value, (bool, int)):
        return bool(value)
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def mask_password(url: URL | str) -> str:
    """The URL as text with its password replaced by ``******`` (a URL with
    several hosts too)."""
    if isinstance(url, str):
        parts = _authority(url)
        if parts is not None and "," in parts[2]:
            scheme, userinfo, hosts, tail = parts
            user, colon, _ = userinfo.partition(":")
            if colon:
                userinfo = f"{user}:******@"
            return f"{scheme}://{userinfo}{hosts}{tail}"
        url = URL(url)
    if url.password is not None:
        url = url.with_password("******")
    return str(url)


# ------------------------------------------------------------ several hosts

# one entry of a host list: a name or IPv4 address, or an IPv6 one in
# brackets; then perhaps a port (an empty one means the default)
_HOST_ENTRY = re.compile(r"(?P<host>\[[^\[\]\s]+\]|[^\[\]:@/?#\s]+)(?::(?P<port>[^:]*))?")
_PORT = re.compile(r"[0-9]{1,5}")


def _authority(text: str) -> tuple[str, str, str, str] | None:
    """``scheme://userinfo@hosts/rest`` as (scheme, userinfo with its ``@``
    or "", hosts, rest); None when the text has no ``://``."""
    scheme, separator, rest = text.partition("://")
    if not separator:
        return None
    ends = [index for index in map(rest.find, "/?#") if index >= 0]
    end = min(ends, default=len(rest))
    userinfo, at, hosts = rest[:end].rpartition("@")
    return scheme, userinfo + at, hosts, rest[end:]


def split_hosts(url: str | URL) -> list[URL]:
    """One URL per host of ``url``, in the order written.

    ``amqp://user:pw@h1:5672,h2:5673,h3/vhost?heartbeat=5`` gives
    ``amqp://user:pw@h1:5672/vhost?heartbeat=5``,
    ``amqp://user:pw@h2:5673/vhost?heartbeat=5`` and
    ``amqp://user:pw@h3/vhost?heartbeat=5``: the user, password, virtual
    host and options are every host's, and a host without a port gets the
    scheme's default (5672, or 5671 for ``amqps``). An IPv6 address is
    written in brackets (``[::1]:5672``). A URL with one host gives itself.

    :param url: an ``amqp://`` or ``amqps://`` URL with one host or several,
        separated by commas.
    :raises ValueError: an empty host (``h1,,h2``), a port that is not an
        integer from 1 to 65535, or a scheme other than amqp and amqps.
    """
    text = str(url)
    parts = _authority(text)
    if parts is None or "," not in parts[2]:
        return [url if isinstance(url, URL) else URL(url)]
    scheme, userinfo, hosts, tail = parts
    if scheme.lower() not in ("amqp", "amqps"):
        raise ValueError(f"unsupported URL scheme {scheme!r}: use amqp:// or amqps://")
    urls: list[URL] = []
    for number, entry in enumerate(hosts.split(","), 1):
        entry = entry.strip()  # "h1, h2", as written in a configuration
        match = _HOST_ENTRY.fullmatch(entry)
        if match is None:
            what = (
                "is empty"
                if not entry
                else f"{entry!r} is not host[:port] (an IPv6 address in brackets)"
            )
            raise ValueError(f"the URL's host list {hosts!r} is invalid: host {number} {what}")
        port = match["port"]
        if port and (_PORT.fullmatch(port) is None or not 1 <= int(port) <= 0xFFFF):
            raise ValueError(
                f"the URL's host list {hosts!r} is invalid: host {number} has the port"
                f" {port!r}, expected an integer from 1 to 65535"
            )
        host = match["host"] if not port else f"{match['host']}:{port}"
        urls.append(URL(f"{scheme}://{userinfo}{host}{tail}"))
    return urls


def host_urls(
    url: str | URL | Sequence[str | URL], shuffle: bool | int | str | None = None
) -> list[URL]:
    """The URLs a connection tries in turn: one per host of ``url``.

    :param url: a URL (perhaps with several hosts, see :func:`split_hosts`)
        or a list of them (the hosts of each, in the order given).
    :param shuffle: shuffle them (once; a connection then tries them in
        turn) to spread clients over the nodes of a cluster. None: the
        first URL's ``shuffle`` option says (default: no).
    :raises ValueError: no URL, a host list :func:`split_hosts` refuses, or
        a ``shuffle`` that is not a boolean.
    """
    given = [url] if isinstance(url, (str, URL)) else list(url)
    urls = [one for entry in given for one in split_hosts(entry)]
    if not urls:
        raise ValueError("no URL given: at least one is needed")
    source, raw = ("keyword", shuffle) if shuffle is not None else ("URL option", None)
    if raw is None:
        raw = urls[0].query.get("shuffle", "0")
    try:
        shuffled = parse_bool(raw)
    except ValueError:
        raise _invalid(source, "shuffle", raw, _FLAG_ALLOWED) from None
    if shuffled:
        random.shuffle(urls)
    return urls


@dataclasses.dataclass(frozen=True)
class ConnectionParameters:
    """Everything a connection needs, read from a URL and keyword overrides."""

    host: str = "localhost"
    port: int = 5672
    login: str = "guest"
    password: str = dataclasses.field(default="guest", repr=False)
    virtualhost: str = "/"
    ssl: bool = False
    name: str | None = None
    cafile: str | None = None
    capath: str | None = None
    cadata: str | None = None
    keyfile: str | None = None
    certfile: str | None = None
    no_verify_ssl: bool = False
    heartbeat: int | None = None
    frame_max: int | None = None
    channel_max: int | None = None
    auth: str = "PLAIN"
    connection_timeout: float | None = None
    interleave: int | None = None
    happy_eyeballs_delay: float | None = None
    reconnect_interval: float = 5.0
    fail_fast: bool = True
    #: the largest message body accepted from the broker (0 = no limit)
    max_message_size: int = MAX_MESSAGE_SIZE_DEFAULT
    #: a URL with several hosts: try them in an order shuffled once per
    #: connection (see :func:`host_urls`)
    shuffle: bool = False

    @property
    def url(self) -> URL:
        """The URL these parameters stand for, password included."""
        url = URL.build(
            scheme="amqps" if self.ssl else "amqp",
            host=self.host,
            port=self.port,
            user=self.login,
            password=self.password,
        )
        # the vhost is one path segment: "/" is written %2F
        return url.with_path("/" + quote(self.virtualhost, safe=""), encoded=True)

    def __str__(self) -> str:
        return mask_password(self.url)

    def ssl_context(self) -> _ssl.SSLContext | None:
        """The TLS context for amqps: verifying by default, with the client certificate."""
        if not self.ssl:
            return None
        context = _ssl.create_default_context(
            _ssl.Purpose.SERVER_AUTH, cafile=self.cafile, capath=self.capath, cadata=self.cadata
        )
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        if self.no_verify_ssl:
            context.check_hostname = False
            context.verify_mode = _ssl.CERT_NONE
        return context


def _first_given(*values: float | None) -> float | None:
    """The first value that is not None (0 is a value: an explicit zero timeout)."""
    return next((value for value in values if value is not None), None)


# The numeric options: what each may be, checked alike for URL options and
# keyword arguments, so that a wrong value fails here and not half-way
# through a handshake. name -> (lowest, highest, what is allowed).
_INTEGER_OPTIONS: dict[str, tuple[int, int, str]] = {
    "heartbeat": (0, 0xFFFF, "an integer from 0 to 65535 (seconds; 0 turns heartbeats off)"),
    "frame_max": (0, 0xFFFFFFFF, "0 (no limit) or an integer from 4096 to 4294967295"),
    "channel_max": (0, 0xFFFF, "an integer from 0 to 65535 (0: the broker's limit)"),
    "max_message_size": (
        0,
        0xFFFFFFFFFFFFFFFF,
        "0 (no limit) or a positive integer (bytes)",
    ),
    "interleave": (0, 0x7FFFFFFF, "an integer, 0 or more"),
}
_SECONDS_OPTIONS = ("connection_timeout", "happy_eyeballs_delay", "reconnect_interval")
_SECONDS_ALLOWED = "a number of seconds, 0 or more"
_FLAG_ALLOWED = (
    "a boolean: true, yes, y, on, enable, enabled, 1 or false, no, n, off, disable, "
    "disabled, 0 (any case)"
)


def _invalid(source: str, key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{source} {key}={value!r} is invalid: expected {allowed}")


def _checked(key: str, value: Any, source: str, shown: Any = None, name: str = "") -> Any:
    """``value`` if it is allowed for the numeric option ``key``, else ValueError.

    ``shown`` and ``name`` are what the message quotes (the URL's text, the
    option's other name); by default the value and ``key``.
    """
    shown = value if shown is None else shown
    name = name or key
    if key in _INTEGER_OPTIONS:
        low, high, allowed = _INTEGER_OPTIONS[key]
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not low <= value <= high
            or (key == "frame_max" and 0 < value < FRAME_MIN_SIZE)
        ):
            raise _invalid(source, name, shown, allowed)
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise _invalid(source, name, shown, _SECONDS_ALLOWED)
    return float(value)


def _number(query: dict[str, str], key: str, name: str = "") -> Any:
    """The numeric URL option ``name`` (default ``key``), checked as ``key``."""
    raw = query.get(name or key)
    if raw is None or raw == "":
        return None
    integer = key in _INTEGER_OPTIONS
    try:
        value: Any = int(raw) if integer else float(raw)
    except ValueError:
        value = None  # refused below, with the text as written
    return _checked(key, value, "URL option", raw, name)


def _flag(query: dict[str, str], key: str, default: str) -> bool:
    raw = query.get(key, default)
    try:
        return parse_bool(raw)
    except ValueError:
        raise _invalid("URL option", key, raw, _FLAG_ALLOWED) from None


def _check_utf8(url: URL) -> None:
    """Refuse parts that are not UTF-8 once percent-decoded.

    yarl puts U+FFFD in place of such bytes (or keeps the escapes), so the
    value would silently be another one: a password or a flag that was
    never written.
    """
    for pair in url.raw_query_string.split("&"):
        raw_key, _, raw_value = pair.partition("=")
        try:
            unquote_to_bytes(raw_value).decode("utf-8")
        except UnicodeDecodeError:
            key = unquote(raw_key, errors="replace")
            raise ValueError(
                f"URL option {key}={raw_value!r} is invalid: its percent-escapes are not UTF-8"
            ) from None
    parts = (("user name", url.raw_user), ("password", url.raw_password), ("path", url.raw_path))
    for what, raw in parts:
        try:
            unquote_to_bytes(raw or "").decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(
                f"the URL's {what} is invalid: its percent-escapes are not UTF-8"
            ) from None


def parse_url(url: str | URL | None = None, **overrides: Any) -> ConnectionParameters:
    """Read connection parameters from a URL; keyword arguments override it.

    :param url: ``amqp://`` or ``amqps://`` URL with one host; None means
        the defaults. (A URL with several hosts is for
        :func:`amqpfast.connect` and :func:`amqpfast.connect_robust`;
        :func:`split_hosts` gives one URL per host.)
    :param overrides: any :class:`ConnectionParameters` field (``host``,
        ``port``, ``login``, ``password``, ``virtualhost``, ``ssl`` ...).
    :raises ValueError: an unknown scheme, several hosts, or an option whose
        value is not allowed (the message names the option, its value and
        what it may be).
    """
    values: dict[str, Any] = {}
    if url is not None:
        hosts = split_hosts(url)
        if len(hosts) > 1:
            raise ValueError(
                f"{mask_password(str(url))} names {len(hosts)} hosts: a connection is made to"
                " one (amqpfast.connect and connect_robust try several in turn;"
                " amqpfast.url.split_hosts gives one URL per host)"
            )
        url = hosts[0]
        if url.scheme not in ("amqp", "amqps"):
            raise ValueError(f"unsupported URL scheme {url.scheme!r}: use amqp:// or amqps://")
        secure = url.scheme == "amqps"
        _check_utf8(url)
        query = dict(url.query)
        values.update(
            host=url.host or "localhost",
            port=url.explicit_port or (5671 if secure else 5672),
            login=url.user if url.user is not None else "guest",
            password=url.password if url.password is not None else "guest",
            virtualhost=url.path[1:] or "/",
            ssl=secure,
            name=query.get("name"),
            cafile=query.get("cafile"),
            capath=query.get("capath"),
            cadata=query.get("cadata"),
            keyfile=query.get("keyfile"),
            certfile=query.get("certfile"),
            no_verify_ssl=_flag(query, "no_verify_ssl", "0"),
            heartbeat=_number(query, "heartbeat"),
            frame_max=_number(query, "frame_max"),
            channel_max=_number(query, "channel_max"),
            auth=query.get("auth", "PLAIN").upper(),
            connection_timeout=_first_given(
                # "timeout" is its other name
                _number(query, "connection_timeout"),
                _number(query, "connection_timeout", "timeout"),
            ),
            interleave=_number(query, "interleave"),
            happy_eyeballs_delay=_number(query, "happy_eyeballs_delay"),
            fail_fast=_flag(query, "fail_fast", "1"),
            shuffle=_flag(query, "shuffle", "0"),
        )
        for key in ("reconnect_interval", "max_message_size"):
            value = _number(query, key)
            if value is not None:
                values[key] = value
    for key, value in overrides.items():
        if value is None:
            continue
        if key in _INTEGER_OPTIONS or key in _SECONDS_OPTIONS:
            value = _checked(key, value, "keyword")
        values[key] = value
    if "port" not in values and values.get("ssl"):
        values["port"] = 5671
    parameters = ConnectionParameters(**values)
    if parameters.auth not in AUTH_MECHANISMS:
        raise ValueError(
            f"auth={parameters.auth!r} is invalid: expected one of {', '.join(AUTH_MECHANISMS)}"
            " (any case)"
        )
    return parameters
