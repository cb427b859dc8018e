"""aiormq's ``connection`` module: the connection class and the URL helpers."""

from __future__ import annotations

from typing import Any

from ..connection import parse_bool, parse_int, parse_timeout  # the same functions, as in aio-pika
from ..core.connection import Connection, ConnectionContext, connect
from ..exceptions import connection_error

__all__ = [
    "DEFAULT_PORTS",
    "Connection",
    "ConnectionContext",
    "connect",
    "exception_by_code",
    "parse_bool",
    "parse_connection_name",
    "parse_heartbeat",
    "parse_int",
    "parse_timeout",
]

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def parse_heartbeat(value: Any) -> int:
    """A heartbeat interval from a URL: 0 unless it is a number in 0..65534."""
    seconds = parse_int(value)
    return seconds if 0 <= seconds < 65535 else 0


def parse_connection_name(name: str | None) -> dict[str, str]:
    """The client property that names a connection (empty without a name)."""
    return {"connection_name": name} if name and isinstance(name, str) else {}


def exception_by_code(frame: Any) -> Exception:
    """The exception for the broker's Connection.Close frame."""
    return connection_error(frame.reply_code or 0, frame.reply_text or "")
