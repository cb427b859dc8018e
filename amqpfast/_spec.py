"""AMQP 0-9-1 facts both codec implementations share.

The method layouts come from pamqp's generated spec classes, so that the field
order and types are the ones of the protocol definition, written down once.
"""

from __future__ import annotations

import datetime
from enum import IntEnum, unique
from typing import Any, Final

from pamqp import base, commands

FRAME_METHOD: Final = 1
FRAME_HEADER: Final = 2
FRAME_BODY: Final = 3
FRAME_HEARTBEAT: Final = 8
FRAME_END: Final = 0xCE
FRAME_OVERHEAD: Final = 8  # 7-byte header + frame-end octet
FRAME_MIN_SIZE: Final = 4096
FRAME_MAX_DEFAULT: Final = 131072
# A frame's size field is 32 bits wide: frame_max 0 ("no limit") means this.
FRAME_MAX_UNLIMITED: Final = 0xFFFFFFFF
# The largest message body a reader accepts unless told otherwise: RabbitMQ's
# own default max_message_size.
MAX_MESSAGE_SIZE_DEFAULT: Final = 128 * 1024 * 1024
PROTOCOL_HEADER: Final = b"AMQP\x00\x00\x09\x01"
HEARTBEAT_FRAME: Final = b"\x08\x00\x00\x00\x00\x00\x00\xce"
BASIC_CLASS_ID: Final = 60
# Bodies at least this long are sent as memoryview pieces, not copied.
ZERO_COPY_MIN: Final = 64 * 1024

# Method indexes (class id << 16 | method id) of the hot path.
BASIC_PUBLISH: Final = 0x003C0028
BASIC_RETURN: Final = 0x003C0032
BASIC_DELIVER: Final = 0x003C003C
BASIC_GET_OK: Final = 0x003C0047
BASIC_ACK: Final = 0x003C0050
BASIC_REJECT: Final = 0x003C005A
BASIC_NACK: Final = 0x003C0078

# Field type codes of method arguments.
BIT: Final = 0
OCTET: Final = 1
SHORT: Final = 2
LONG: Final = 3
LONGLONG: Final = 4
SHORTSTR: Final = 5
LONGSTR: Final = 6
TABLE: Final = 7
TIMESTAMP: Final = 8

_TYPE_CODES = {
    "bit": BIT,
    "octet": OCTET,
    "short": SHORT,
    "long": LONG,
    "longlong": LONGLONG,
    "shortstr": SHORTSTR,
    "longstr": LONGSTR,
    "table": TABLE,
    "timestamp": TIMESTAMP,
}

Fields = tuple[tuple[str, int], ...]


def _fields(cls: type[base.Frame]) -> Fields:
    return tuple((name, _TYPE_CODES[cls.amqp_type(name)]) for name in cls.attributes())


# index -> (pamqp class, argument layout), for every method of the connection,
# channel, exchange, queue, basic, confirm and tx classes.
METHODS: Final[dict[int, tuple[type[base.Frame], Fields]]] = {
    index: (cls, _fields(cls)) for index, cls in commands.INDEX_MAPPING.items()
}

# Basic properties in wire order: (attribute, flag bit, field type).
PROPERTIES: Final = (
    ("content_type", 0x8000, SHORTSTR),
    ("content_encoding", 0x4000, SHORTSTR),
    ("headers", 0x2000, TABLE),
    ("delivery_mode", 0x1000, OCTET),
    ("priority", 0x0800, OCTET),
    ("correlation_id", 0x0400, SHORTSTR),
    ("reply_to", 0x0200, SHORTSTR),
    ("expiration", 0x0100, SHORTSTR),
    ("message_id", 0x0080, SHORTSTR),
    ("timestamp", 0x0040, TIMESTAMP),
    ("message_type", 0x0020, SHORTSTR),
    ("user_id", 0x0010, SHORTSTR),
    ("app_id", 0x0008, SHORTSTR),
    ("cluster_id", 0x0004, SHORTSTR),
)
PROPERTY_NAMES: Final = tuple(name for name, _, _ in PROPERTIES)


# Message properties as the API takes them (amqpfast.Message and the codec's
# MessageBase, which keeps them where the writer reads them).


@unique
class DeliveryMode(IntEnum):
    """Whether the broker writes a message to disk."""

    NOT_PERSISTENT = 1
    PERSISTENT = 2


DELIVERY_MODES: Final[dict[Any, DeliveryMode]] = {
    None: DeliveryMode.NOT_PERSISTENT,
    0: DeliveryMode.NOT_PERSISTENT,
    1: DeliveryMode.NOT_PERSISTENT,
    2: DeliveryMode.PERSISTENT,
}

MILLISECONDS: Final = 1000
_UTC = datetime.UTC


def delivery_mode(value: Any) -> DeliveryMode:
    """A delivery mode given as DeliveryMode, 1, 2, 0 or None (both: not persistent)."""
    mode = DELIVERY_MODES.get(value)
    return mode if mode is not None else DeliveryMode(int(value or 1))


def encode_expiration(value: Any) -> str | None:
    """Expiration (seconds, timedelta or datetime) as AMQP wants it: milliseconds, text."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        now = datetime.datetime.now(tz=value.tzinfo)
        return str(int((value - now).total_seconds() * MILLISECONDS))
    if isinstance(value, datetime.timedelta):
        return str(int(value.total_seconds() * MILLISECONDS))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value * MILLISECONDS))
    raise ValueError(f"invalid expiration: {value!r}")


def encode_timestamp(value: Any) -> datetime.datetime | None:
    """A timestamp given as datetime, seconds since the epoch or a delay from now."""
    if value is None or isinstance(value, datetime.datetime):
        return value
    if isinstance(value, datetime.timedelta):
        return datetime.datetime.now(tz=_UTC) + value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, tz=_UTC)
    raise ValueError(f"invalid timestamp: {value!r}")
