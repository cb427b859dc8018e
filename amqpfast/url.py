"""Connection URLs: ``amqp://user:password@host:port/vhost?option=value``.

The query options are aio-pika's: ``name``, ``cafile``, ``capath``,
``cadata``, ``keyfile``, ``certfile``, ``no_verify_ssl``, ``heartbeat``,
``interleave``, ``happy_eyeballs_delay``, ``reconnect_interval`` and
``fail_fast``; and ``frame_max``, ``channel_max``, ``auth`` and
``connection_timeout`` (also spelt ``timeout``).
"""

from __future__ import annotations

import dataclasses
import ssl as _ssl
from typing import Any
from urllib.parse import quote

from yarl import URL

__all__ = ["ConnectionParameters", "mask_password", "parse_bool", "parse_url"]

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
    """The URL as text with its password replaced by ``******``."""
    url = URL(url) if isinstance(url, str) else url
    if url.password is not None:
        url = url.with_password("******")
    return str(url)


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


def _number(query: dict[str, str], key: str, kind: type[int] | type[float]) -> Any:
    raw = query.get(key)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"URL option {key}={raw!r} is not a number") from None


def parse_url(url: str | URL | None = None, **overrides: Any) -> ConnectionParameters:
    """Read connection parameters from a URL; keyword arguments override it.

    :param url: ``amqp://`` or ``amqps://`` URL; None means the defaults.
    :param overrides: any :class:`ConnectionParameters` field (``host``,
        ``port``, ``login``, ``password``, ``virtualhost``, ``ssl`` ...).
    :raises ValueError: an unknown scheme or a malformed option.
    """
    values: dict[str, Any] = {}
    if url is not None:
        url = URL(url) if isinstance(url, str) else url
        if url.scheme not in ("amqp", "amqps"):
            raise ValueError(f"unsupported URL scheme {url.scheme!r}: use amqp:// or amqps://")
        secure = url.scheme == "amqps"
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
            no_verify_ssl=parse_bool(query.get("no_verify_ssl", "0")),
            heartbeat=_number(query, "heartbeat", int),
            frame_max=_number(query, "frame_max", int),
            channel_max=_number(query, "channel_max", int),
            auth=query.get("auth", "PLAIN").upper(),
            connection_timeout=_first_given(
                _number(query, "connection_timeout", float), _number(query, "timeout", float)
            ),
            interleave=_number(query, "interleave", int),
            happy_eyeballs_delay=_number(query, "happy_eyeballs_delay", float),
            fail_fast=parse_bool(query.get("fail_fast", "1")),
        )
        interval = _number(query, "reconnect_interval", float)
        if interval is not None:
            values["reconnect_interval"] = interval
    values.update({key: value for key, value in overrides.items() if value is not None})
    if "port" not in values and values.get("ssl"):
        values["port"] = 5671
    parameters = ConnectionParameters(**values)
    if parameters.auth not in AUTH_MECHANISMS:
        raise ValueError(
            f"unknown auth mechanism {parameters.auth!r}: use one of {AUTH_MECHANISMS}"
        )
    return parameters
