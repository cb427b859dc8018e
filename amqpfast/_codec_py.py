"""The pure-Python twin of the compiled frame codec (``_codec.pyx``).

Same classes, events and exceptions as the compiled module; used when
``AMQPFAST_NO_EXTENSIONS=1`` is set, when the extension is not built, and by
type checkers. Sans-IO: bytes go in, events come out; commands go in, bytes
come out. Nothing here imports asyncio or socket.
"""

from __future__ import annotations

import calendar
import contextvars
import datetime
import decimal
import random
import struct
import time
from collections.abc import Callable, Container, Iterator
from typing import Any, ClassVar

from pamqp import base as _pamqp_base

from . import _spec
from .exceptions import (
    CHANNEL_ERROR,
    FRAME_ERROR,
    NOT_IMPLEMENTED,
    RESOURCE_ERROR,
    SYNTAX_ERROR,
    UNEXPECTED_FRAME,
    ChannelNotOpenError,
    EncodeError,
    MessageTooLarge,
    ProtocolError,
)

__all__ = [
    "IMPLEMENTATION",
    "BasicAck",
    "BasicDeliver",
    "BasicGetOk",
    "BasicNack",
    "BasicProperties",
    "BasicPublish",
    "BasicReject",
    "BasicReturn",
    "ContentMessage",
    "Finished",
    "FrameReader",
    "FrameWriter",
    "Heartbeat",
    "MethodFrame",
    "ProtocolHeader",
    "decode_table",
    "encode_table",
]

IMPLEMENTATION = "python"

# Field tables and arrays nest at most this deep, so that a hostile peer
# cannot exhaust the stack.
MAX_DEPTH = 64

_U8 = struct.Struct(">B")
_I8 = struct.Struct(">b")
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_FRAME_HEADER = struct.Struct(">BHI")
_METHOD_INDEX = struct.Struct(">I")
_CONTENT_HEADER = struct.Struct(">HHQH")
_DELIVERY_TAG_BITS = struct.Struct(">QB")
_FRAME_END = b"\xce"
_UTC = datetime.UTC


# ---------------------------------------------------------------- events


class MethodFrame:
    """A method frame: the channel it came on and the decoded method."""

    __slots__ = ("channel", "method")

    def __init__(self, channel: int, method: Any) -> None:
        self.channel = channel
        self.method = method

    def __repr__(self) -> str:
        return f"<MethodFrame channel={self.channel} {self.method!r}>"


class ContentMessage:
    """A whole message: the method that carried it, its properties and body.

    ``method`` is a :class:`BasicDeliver`, :class:`BasicGetOk`,
    :class:`BasicReturn` or :class:`BasicPublish`; ``body`` is one bytes
    object however many body frames carried it.
    """

    __slots__ = ("channel", "method", "properties", "body")

    def __init__(self, channel: int, method: Any, properties: BasicProperties, body: bytes) -> None:
        self.channel = channel
        self.method = method
        self.properties = properties
        self.body = body

    def __repr__(self) -> str:
        return (
            f"<ContentMessage channel={self.channel} {self.method!r} body={len(self.body)} bytes>"
        )


class Heartbeat:
    """A heartbeat frame (always on channel 0)."""

    __slots__ = ()
    channel: ClassVar[int] = 0

    def __repr__(self) -> str:
        return "<Heartbeat>"


class ProtocolHeader:
    """The broker's protocol header: its answer when it refuses our version."""

    __slots__ = ("major", "minor", "revision")
    channel: ClassVar[int] = 0

    def __init__(self, major: int, minor: int, revision: int) -> None:
        self.major = major
        self.minor = minor
        self.revision = revision

    def __repr__(self) -> str:
        return f"<ProtocolHeader {self.major}-{self.minor}-{self.revision}>"


_HEARTBEAT = Heartbeat()


# ------------------------------------------------------ hot method classes


class _Method:
    """Base of the hot-path methods: attribute access, iteration, equality."""

    __slots__ = ()
    name: ClassVar[str] = ""
    index: ClassVar[int] = 0
    synchronous: ClassVar[bool] = False

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        names: tuple[str, ...] = self.__slots__
        for attribute in names:
            yield attribute, getattr(self, attribute)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = " ".join(f"{key}={value!r}" for key, value in self)
        return f"<{self.name} {fields}>"


class BasicPublish(_Method):
    """Basic.Publish (60, 40)."""

    __slots__ = ("exchange", "routing_key", "mandatory", "immediate")
    name = "Basic.Publish"
    index = _spec.BASIC_PUBLISH

    def __init__(
        self,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        immediate: bool = False,
    ) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.mandatory = mandatory
        self.immediate = immediate


class BasicReturn(_Method):
    """Basic.Return (60, 50): an unroutable mandatory message comes back."""

    __slots__ = ("reply_code", "reply_text", "exchange", "routing_key")
    name = "Basic.Return"
    index = _spec.BASIC_RETURN

    def __init__(
        self,
        reply_code: int = 0,
        reply_text: str = "",
        exchange: str = "",
        routing_key: str = "",
    ) -> None:
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key


class BasicDeliver(_Method):
    """Basic.Deliver (60, 60): a message for a consumer."""

    __slots__ = ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key")
    name = "Basic.Deliver"
    index = _spec.BASIC_DELIVER

    def __init__(
        self,
        consumer_tag: str = "",
        delivery_tag: int = 0,
        redelivered: bool = False,
        exchange: str = "",
        routing_key: str = "",
    ) -> None:
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key


class BasicGetOk(_Method):
    """Basic.GetOk (60, 71): the message a Basic.Get asked for."""

    __slots__ = ("delivery_tag", "redelivered", "exchange", "routing_key", "message_count")
    name = "Basic.GetOk"
    index = _spec.BASIC_GET_OK

    def __init__(
        self,
        delivery_tag: int = 0,
        redelivered: bool = False,
        exchange: str = "",
        routing_key: str = "",
        message_count: int = 0,
    ) -> None:
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_count = message_count


class BasicAck(_Method):
    """Basic.Ack (60, 80), in both directions (consumer acks, publisher confirms)."""

    __slots__ = ("delivery_tag", "multiple")
    name = "Basic.Ack"
    index = _spec.BASIC_ACK

    def __init__(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        self.delivery_tag = delivery_tag
        self.multiple = multiple


class BasicReject(_Method):
    """Basic.Reject (60, 90)."""

    __slots__ = ("delivery_tag", "requeue")
    name = "Basic.Reject"
    index = _spec.BASIC_REJECT

    def __init__(self, delivery_tag: int = 0, requeue: bool = True) -> None:
        self.delivery_tag = delivery_tag
        self.requeue = requeue


class BasicNack(_Method):
    """Basic.Nack (60, 120), in both directions."""

    __slots__ = ("delivery_tag", "multiple", "requeue")
    name = "Basic.Nack"
    index = _spec.BASIC_NACK

    def __init__(self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True) -> None:
        self.delivery_tag = delivery_tag
        self.multiple = multiple
        self.requeue = requeue


_CONTENT_METHODS = frozenset(
    (_spec.BASIC_PUBLISH, _spec.BASIC_RETURN, _spec.BASIC_DELIVER, _spec.BASIC_GET_OK)
)


class BasicProperties:
    """The 14 properties of a message's content header (None = absent).

    The attribute names are pamqp's (``message_type`` is AMQP's ``type``).
    """

    __slots__ = _spec.PROPERTY_NAMES

    def __init__(
        self,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        delivery_mode: int | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: str | None = None,
        message_id: str | None = None,
        timestamp: datetime.datetime | None = None,
        message_type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
        cluster_id: str | None = None,
    ) -> None:
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.headers = headers
        self.delivery_mode = delivery_mode
        self.priority = priority
        self.correlation_id = correlation_id
        self.reply_to = reply_to
        self.expiration = expiration
        self.message_id = message_id
        self.timestamp = timestamp
        self.message_type = message_type
        self.user_id = user_id
        self.app_id = app_id
        self.cluster_id = cluster_id

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        for attribute in _spec.PROPERTY_NAMES:
            yield attribute, getattr(self, attribute)

    def copy(self) -> BasicProperties:
        """A shallow copy (the headers dict is shared)."""
        clone = BasicProperties.__new__(BasicProperties)
        for attribute in _spec.PROPERTY_NAMES:
            setattr(clone, attribute, getattr(self, attribute))
        return clone

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = " ".join(f"{key}={value!r}" for key, value in self if value is not None)
        return f"<BasicProperties {fields}>"


class MessageBase:
    """The fields of a message to publish, kept where the writer reads them.

    ``amqpfast.Message`` builds on it; the writer encodes its properties
    straight from these fields.
    """

    __slots__ = (
        "_locked",
        "app_id",
        "body",
        "body_size",
        "content_encoding",
        "content_type",
        "correlation_id",
        "delivery_mode",
        "expiration",
        "headers",
        "message_id",
        "priority",
        "reply_to",
        "timestamp",
        "type",
        "user_id",
    )
    _locked: bool
    body: bytes
    body_size: int
    headers: dict[str, Any]
    content_type: str | None
    content_encoding: str | None
    delivery_mode: _spec.DeliveryMode
    priority: int | None
    correlation_id: str | None
    reply_to: str | None
    expiration: int | float | datetime.datetime | datetime.timedelta | None
    message_id: str | None
    timestamp: datetime.datetime | None
    type: str | None
    user_id: str | None
    app_id: str | None

    def __init__(
        self,
        body: bytes,
        *,
        headers: dict[str, Any] | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        delivery_mode: _spec.DeliveryMode | int | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: int | float | datetime.datetime | datetime.timedelta | None = None,
        message_id: str | None = None,
        timestamp: int | float | datetime.datetime | datetime.timedelta | None = None,
        type: str | None = None,
        user_id: str | None = None,
        app_id: str | None = None,
    ) -> None:
        body = body if isinstance(body, bytes) else bytes(body)
        self._locked = False
        self.body = body
        self.body_size = len(body)
        self.headers = headers if headers else {}
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.delivery_mode = _spec.delivery_mode(delivery_mode)
        self.priority = int(priority) if priority else 0
        # aio-pika's rule: a false value is None, anything else its str()
        self.correlation_id = str(correlation_id) if correlation_id else None
        self.reply_to = str(reply_to) if reply_to else None
        self.expiration = expiration
        self.message_id = str(message_id) if message_id else None
        self.timestamp = _spec.encode_timestamp(timestamp)
        self.type = str(type) if type else None
        self.user_id = str(user_id) if user_id else None
        self.app_id = str(app_id) if app_id else None

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and self._locked:
            raise ValueError("Message is locked")
        object.__setattr__(self, name, value)


class DeliveredBase:
    """A message from the broker as the low level hands it on: ``delivery``
    (the method that brought it), ``properties``, ``body`` and ``channel``.
    ``amqpfast.core.DeliveredMessage`` builds on it; ``header`` is the decoded
    properties (what the codec hands in), or anything else its
    ``_take_header`` understands.
    """

    __slots__ = ("_header", "body", "channel", "delivery", "properties")
    delivery: Any
    properties: Any
    body: bytes
    channel: Any
    _header: Any

    def __init__(
        self, delivery: Any, header: Any = None, body: bytes = b"", channel: Any = None
    ) -> None:
        self.delivery = delivery
        self.body = body
        self.channel = channel
        self._header = None
        if type(header) is BasicProperties:
            self.properties = header
        else:
            self._take_header(header)

    def _take_header(self, header: Any) -> None:
        raise NotImplementedError  # the subclass's


class IncomingBase(MessageBase):
    """The state of a message from the broker, set from the low-level
    delivery (``message``: its ``delivery``, ``properties``, ``body`` and
    ``channel``). ``amqpfast.IncomingMessage`` builds on it; ``no_ack``: the
    consumer does not acknowledge (the message is processed already).
    """

    __slots__ = ("_channel", "_delivery", "_no_ack", "_processed", "_properties")
    _channel: Any
    _delivery: Any
    _no_ack: bool
    _processed: bool
    _properties: Any

    def __init__(self, message: Any, no_ack: bool = False) -> None:
        properties = getattr(message, "properties", None)
        if properties is None:  # aiormq's DeliveredMessage has them in its header
            properties = message.header.properties
        self._take(message.delivery, properties, message.body, message.channel, no_ack)

    def _take(
        self, delivery: Any, properties: Any, body: bytes, channel: Any, no_ack: bool
    ) -> None:
        done = no_ack or not getattr(delivery, "delivery_tag", None)
        set_ = object.__setattr__  # not the lock's check: nothing is locked yet
        set_(self, "_locked", done)
        set_(self, "_processed", done)
        set_(self, "_no_ack", no_ack)
        set_(self, "_channel", channel)
        set_(self, "_delivery", delivery)
        set_(self, "_properties", properties)
        set_(self, "body", body)
        set_(self, "body_size", len(body))

    # A message of the class made of a delivery's parts, as the low level has
    # them (no DeliveredMessage in between): the consumers of the aio-pika
    # API get theirs so.

    @classmethod
    def delivered(cls, delivery: Any, properties: Any, body: bytes, channel: Any) -> Any:
        """A message of a consumer that acknowledges, made of its delivery's parts."""
        return cls._of_parts(delivery, properties, body, channel, False)

    @classmethod
    def delivered_no_ack(cls, delivery: Any, properties: Any, body: bytes, channel: Any) -> Any:
        """A message of a ``no_ack`` consumer (processed already), made of its delivery's parts."""
        return cls._of_parts(delivery, properties, body, channel, True)

    @classmethod
    def _of_parts(
        cls, delivery: Any, properties: Any, body: bytes, channel: Any, no_ack: bool
    ) -> Any:
        message = cls.__new__(cls)
        message._take(delivery, properties, body, channel, no_ack)
        return message

    def _mark_processed(self) -> None:
        """Acked, nacked or rejected: processed, and locked."""
        object.__setattr__(self, "_processed", True)
        object.__setattr__(self, "_locked", True)


def _message_properties(message: MessageBase) -> BasicProperties:
    # what the writer sends for a MessageBase
    return BasicProperties(
        message.content_type,
        message.content_encoding,
        message.headers,
        message.delivery_mode,
        message.priority,
        message.correlation_id,
        message.reply_to,
        _spec.encode_expiration(message.expiration),
        message.message_id,
        message.timestamp,
        message.type,
        message.user_id,
        message.app_id,
    )


# ------------------------------------------------------------- decoding


def _truncated(what: str) -> ProtocolError:
    return ProtocolError(SYNTAX_ERROR, f"truncated {what}")


def _decode_shortstr(data: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos >= end:
        raise _truncated("short string")
    stop = pos + 1 + data[pos]
    if stop > end:
        raise _truncated("short string")
    # surrogateescape: a name that is not UTF-8 survives a round trip.
    return bytes(data[pos + 1 : stop]).decode("utf-8", "surrogateescape"), stop


def _decode_longstr(data: bytes, pos: int, end: int) -> tuple[str | bytes, int]:
    if pos + 4 > end:
        raise _truncated("long string")
    stop = pos + 4 + _U32.unpack_from(data, pos)[0]
    if stop > end:
        raise _truncated("long string")
    raw = bytes(data[pos + 4 : stop])
    try:
        return raw.decode("utf-8"), stop
    except UnicodeDecodeError:
        return raw, stop


def _decode_timestamp(value: int) -> datetime.datetime:
    # Past the year 2106 a value is taken to be in milliseconds (some
    # clients send those), as pamqp does.
    seconds = value / 1000.0 if value > 0xFFFFFFFF else value
    try:
        return datetime.datetime.fromtimestamp(seconds, tz=_UTC)
    except (OverflowError, ValueError, OSError):
        raise ProtocolError(SYNTAX_ERROR, f"timestamp out of range: {value}") from None


def _decode_decimal(scale: int, mantissa: int) -> decimal.Decimal:
    return decimal.Decimal(mantissa) * (decimal.Decimal(10) ** -scale)


# type octet -> (struct, size) for the fixed-size field values
_FIXED_VALUES: dict[int, tuple[struct.Struct, int]] = {
    ord("b"): (_I8, 1),
    ord("B"): (_U8, 1),
    ord("s"): (_I16, 2),
    ord("u"): (_U16, 2),
    ord("I"): (_I32, 4),
    ord("i"): (_U32, 4),
    ord("l"): (_I64, 8),
    ord("L"): (_U64, 8),
    ord("f"): (_F32, 4),
    ord("d"): (_F64, 8),
}


def _decode_value(data: bytes, pos: int, end: int, depth: int) -> tuple[Any, int]:
    if pos >= end:
        raise _truncated("field value")
    kind = data[pos]
    pos += 1
    fixed = _FIXED_VALUES.get(kind)
    if fixed is not None:
        packer, size = fixed
        if pos + size > end:
            raise _truncated(f"field value of type {chr(kind)!r}")
        return packer.unpack_from(data, pos)[0], pos + size
    if kind == 0x53:  # 'S'
        return _decode_longstr(data, pos, end)
    if kind == 0x74:  # 't'
        if pos >= end:
            raise _truncated("boolean")
        return data[pos] != 0, pos + 1
    if kind == 0x46:  # 'F'
        return _decode_table(data, pos, end, depth + 1)
    if kind == 0x41:  # 'A'
        return _decode_array(data, pos, end, depth + 1)
    if kind == 0x54:  # 'T'
        if pos + 8 > end:
            raise _truncated("timestamp")
        return _decode_timestamp(_U64.unpack_from(data, pos)[0]), pos + 8
    if kind == 0x56:  # 'V'
        return None, pos
    if kind == 0x44:  # 'D'
        if pos + 5 > end:
            raise _truncated("decimal")
        return _decode_decimal(data[pos], _I32.unpack_from(data, pos + 1)[0]), pos + 5
    if kind == 0x78:  # 'x'
        if pos + 4 > end:
            raise _truncated("byte array")
        stop = pos + 4 + _U32.unpack_from(data, pos)[0]
        if stop > end:
            raise _truncated("byte array")
        return bytes(data[pos + 4 : stop]), stop
    raise ProtocolError(SYNTAX_ERROR, f"unknown field value type 0x{kind:02x}")


def _container_end(data: bytes, pos: int, end: int, depth: int, what: str) -> int:
    if depth > MAX_DEPTH:
        raise ProtocolError(SYNTAX_ERROR, f"{what} nested more than {MAX_DEPTH} deep")
    if pos + 4 > end:
        raise _truncated(what)
    stop: int = pos + 4 + _U32.unpack_from(data, pos)[0]
    if stop > end:
        raise _truncated(what)
    return stop


def _decode_table(data: bytes, pos: int, end: int, depth: int = 0) -> tuple[dict[str, Any], int]:
    stop = _container_end(data, pos, end, depth, "field table")
    pos += 4
    table: dict[str, Any] = {}
    while pos < stop:
        key, pos = _decode_shortstr(data, pos, stop)
        table[key], pos = _decode_value(data, pos, stop, depth)
    return table, stop


def _decode_array(data: bytes, pos: int, end: int, depth: int) -> tuple[list[Any], int]:
    stop = _container_end(data, pos, end, depth, "field array")
    pos += 4
    items: list[Any] = []
    while pos < stop:
        value, pos = _decode_value(data, pos, stop, depth)
        items.append(value)
    return items, stop


def decode_table(data: bytes) -> dict[str, Any]:
    """Decode one field table (its 4-byte length first) that fills ``data``."""
    table, pos = _decode_table(data, 0, len(data))
    if pos != len(data):
        raise ProtocolError(SYNTAX_ERROR, "trailing bytes after field table")
    return table


def _decode_argument(data: bytes, pos: int, end: int, kind: int) -> tuple[Any, int]:
    if kind == _spec.SHORTSTR:
        return _decode_shortstr(data, pos, end)
    if kind == _spec.LONGSTR:
        return _decode_longstr(data, pos, end)
    if kind == _spec.TABLE:
        return _decode_table(data, pos, end)
    packer, what = _ARGUMENT_STRUCTS[kind]
    if pos + packer.size > end:
        raise _truncated(what)
    return packer.unpack_from(data, pos)[0], pos + packer.size


_ARGUMENT_STRUCTS = {
    _spec.OCTET: (_U8, "octet"),
    _spec.SHORT: (_U16, "short"),
    _spec.LONG: (_U32, "long"),
    _spec.LONGLONG: (_U64, "long long"),
}


def _decode_fields(
    target: Any, fields: _spec.Fields, data: bytes, pos: int, end: int, name: str
) -> None:
    """Decode a method's arguments in wire order onto ``target``'s attributes."""
    bit = 8  # position in the current bit octet; 8 = none open
    bits = 0
    for attribute, kind in fields:
        if kind == _spec.BIT:
            if bit == 8:
                if pos >= end:
                    raise _truncated(f"{name} bits")
                bits = data[pos]
                pos += 1
                bit = 0
            if attribute:
                setattr(target, attribute, bool(bits & (1 << bit)))
            bit += 1
            continue
        bit = 8
        value, pos = _decode_argument(data, pos, end, kind)
        if attribute:
            setattr(target, attribute, value)
    if pos != end:
        raise ProtocolError(SYNTAX_ERROR, f"{end - pos} trailing bytes after {name}")


def _build_hot_fields() -> dict[int, tuple[type[_Method], _spec.Fields]]:
    hot: dict[int, tuple[type[_Method], _spec.Fields]] = {}
    classes = (
        BasicPublish,
        BasicReturn,
        BasicDeliver,
        BasicGetOk,
        BasicAck,
        BasicReject,
        BasicNack,
    )
    for cls in classes:
        _, fields = _spec.METHODS[cls.index]
        # Arguments the class does not keep (Basic.Publish's ticket) are
        # decoded and dropped, and encoded as zero.
        hot[cls.index] = (cls, tuple((a if a in cls.__slots__ else "", k) for a, k in fields))
    return hot


# index -> (class to build, argument layout); the hot ones are ours, the rest pamqp's.
_METHODS: dict[int, tuple[type[Any], _spec.Fields]] = {**_spec.METHODS, **_build_hot_fields()}


def _decode_method(data: bytes, start: int, end: int) -> Any:
    if start + 4 > end:
        raise ProtocolError(FRAME_ERROR, "method frame shorter than its method id")
    index = _METHOD_INDEX.unpack_from(data, start)[0]
    try:
        cls, fields = _METHODS[index]
    except KeyError:
        raise ProtocolError(
            NOT_IMPLEMENTED, f"unknown method: class {index >> 16}, method {index & 0xFFFF}"
        ) from None
    method = object.__new__(cls)
    _decode_fields(method, fields, data, start + 4, end, cls.name)
    return method


def _decode_properties(data: bytes, pos: int, end: int) -> BasicProperties:
    props = BasicProperties.__new__(BasicProperties)
    flags = 0
    word = 1
    first = True
    while word & 1:  # bit 0 says another flags word follows
        if pos + 2 > end:
            raise _truncated("property flags")
        word = _U16.unpack_from(data, pos)[0]
        pos += 2
        if first:
            flags = word
            first = False
    value: Any
    for name, flag, kind in _spec.PROPERTIES:
        if not flags & flag:
            value = None
        elif kind == _spec.SHORTSTR:
            value, pos = _decode_shortstr(data, pos, end)
        elif kind == _spec.TABLE:
            value, pos = _decode_table(data, pos, end)
        elif kind == _spec.OCTET:
            if pos >= end:
                raise _truncated(name)
            value = data[pos]
            pos += 1
        else:  # timestamp
            if pos + 8 > end:
                raise _truncated(name)
            value = _decode_timestamp(_U64.unpack_from(data, pos)[0])
            pos += 8
        setattr(props, name, value)
    if pos != end:
        raise ProtocolError(SYNTAX_ERROR, f"{end - pos} trailing bytes after properties")
    return props


class _Partial:
    """A message whose content header or body frames are still due."""

    __slots__ = ("method", "properties", "size", "body")

    def __init__(self, method: Any) -> None:
        self.method = method
        self.properties: BasicProperties | None = None
        self.size = 0
        self.body = bytearray()


class FrameReader:
    """Turns the bytes received from the broker into events.

    :param frame_max: the largest frame accepted, header and end octet
        included; set it again after Connection.Tune (0 means no limit).
    :param max_message_size: the largest message body accepted; a content
        header that announces more raises :class:`MessageTooLarge` (0 means
        no limit).
    :param channels: the numbers of the open channels (any container, read
        at every feed: the connection's dict of channels); a frame on
        another channel than 0 raises :class:`ChannelNotOpenError`. None
        takes frames on any channel.
    """

    def __init__(
        self,
        frame_max: int = _spec.FRAME_MAX_DEFAULT,
        max_message_size: int = _spec.MAX_MESSAGE_SIZE_DEFAULT,
        channels: Container[int] | None = None,
    ) -> None:
        self._buffer = bytearray()
        self._partials: dict[int, _Partial] = {}
        self._error: ProtocolError | None = None
        self._started = False
        self._frame_max = _spec.FRAME_MAX_DEFAULT
        self.frame_max = frame_max
        self._max_message_size = 0
        self.max_message_size = max_message_size
        self.channels = channels
        # the channel last found open during this feed: frames of one
        # channel in a row are looked up once
        self._open_channel = 0

    @property
    def frame_max(self) -> int:
        """The largest frame accepted (0 = no limit)."""
        return 0 if self._frame_max == _spec.FRAME_MAX_UNLIMITED else self._frame_max

    @frame_max.setter
    def frame_max(self, value: int) -> None:
        self._frame_max = _checked_frame_max(value)

    @property
    def max_message_size(self) -> int:
        """The largest message body accepted (0 = no limit)."""
        return self._max_message_size

    @max_message_size.setter
    def max_message_size(self, value: int) -> None:
        self._max_message_size = _checked_message_size(value)

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are held."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Take the next bytes of the stream; return the events now complete.

        :raises ProtocolError: the stream is malformed; the reader then
            refuses all further input.
        """
        if self._error is not None:
            raise ProtocolError(
                self._error.reply_code, f"stream already failed: {self._error.message}"
            )
        self._buffer += data
        events: list[Any] = []
        self._open_channel = 0  # the channels may have changed since the last feed
        try:
            consumed = self._parse(self._buffer, events)
        except ProtocolError as error:
            self._error = error
            self._buffer.clear()
            self._partials.clear()
            raise
        del self._buffer[:consumed]
        return events

    def _parse(self, data: bytearray, events: list[Any]) -> int:
        pos = 0
        size_left = len(data)
        while size_left - pos >= 7:
            if not self._started:
                if data[pos] == 0x41:  # 'A': the broker answered with its protocol header
                    if size_left - pos < 8:
                        break
                    if bytes(data[pos : pos + 4]) != b"AMQP":
                        raise ProtocolError(FRAME_ERROR, "malformed protocol header")
                    events.append(ProtocolHeader(data[pos + 5], data[pos + 6], data[pos + 7]))
                    pos += 8
                    continue
                self._started = True
            kind, channel, size = _FRAME_HEADER.unpack_from(data, pos)
            if kind not in (1, 2, 3, 8):
                raise ProtocolError(FRAME_ERROR, f"unknown frame type {kind}")
            if size > self._frame_max - _spec.FRAME_OVERHEAD:
                raise ProtocolError(
                    FRAME_ERROR,
                    f"frame of {size + 8} bytes exceeds frame_max {self._frame_max}",
                )
            stop = pos + 7 + size
            if stop >= size_left:
                break
            if data[stop] != _spec.FRAME_END:
                raise ProtocolError(FRAME_ERROR, f"bad frame end octet 0x{data[stop]:02x}")
            if channel != self._open_channel and kind != _spec.FRAME_HEARTBEAT:
                self._check_channel(channel)
            self._frame(kind, channel, data, pos + 7, stop, events)
            pos = stop + 1
        return pos

    def _check_channel(self, channel: int) -> None:
        channels = self.channels
        if channels is not None and channel not in channels:
            raise ChannelNotOpenError(
                CHANNEL_ERROR, f"frame on channel {channel}, which is not open"
            )
        self._open_channel = channel

    def _frame(
        self, kind: int, channel: int, data: bytearray, start: int, stop: int, events: list[Any]
    ) -> None:
        if kind == _spec.FRAME_METHOD:
            if channel in self._partials:
                raise ProtocolError(
                    UNEXPECTED_FRAME, f"method frame on channel {channel} while content is due"
                )
            method = _decode_method(data, start, stop)  # type: ignore[arg-type]
            if method.index in _CONTENT_METHODS:
                self._partials[channel] = _Partial(method)
            else:
                events.append(MethodFrame(channel, method))
        elif kind == _spec.FRAME_HEADER:
            partial = self._partials.get(channel)
            if partial is None or partial.properties is not None:
                raise ProtocolError(
                    UNEXPECTED_FRAME, f"unexpected content header on channel {channel}"
                )
            if stop - start < 14:
                raise ProtocolError(FRAME_ERROR, "content header frame too short")
            class_id, _weight, body_size, _ = _CONTENT_HEADER.unpack_from(data, start)
            if class_id != _spec.BASIC_CLASS_ID:
                raise ProtocolError(
                    UNEXPECTED_FRAME, f"content header of class {class_id}, not basic"
                )
            if self._max_message_size and body_size > self._max_message_size:
                raise _too_large(body_size, self._max_message_size, channel)
            partial.properties = _decode_properties(data, start + 12, stop)  # type: ignore[arg-type]
            partial.size = body_size
            if body_size == 0:
                del self._partials[channel]
                events.append(ContentMessage(channel, partial.method, partial.properties, b""))
        elif kind == _spec.FRAME_BODY:
            partial = self._partials.get(channel)
            if partial is None or partial.properties is None:
                raise ProtocolError(UNEXPECTED_FRAME, f"unexpected body frame on channel {channel}")
            received = len(partial.body) + stop - start
            if received > partial.size:
                raise ProtocolError(
                    FRAME_ERROR,
                    f"body of {received} bytes exceeds the {partial.size} bytes announced",
                )
            if received == partial.size and not partial.body:
                body = bytes(data[start:stop])  # the body in one frame
            else:
                # held as it comes: memory follows the bytes received, not
                # the size the header announced
                partial.body += data[start:stop]
                if received < partial.size:
                    return
                body = bytes(partial.body)
            del self._partials[channel]
            events.append(ContentMessage(channel, partial.method, partial.properties, body))
        else:  # heartbeat
            if channel != 0 or stop != start:
                raise ProtocolError(FRAME_ERROR, "heartbeat frame must be empty and on channel 0")
            events.append(_HEARTBEAT)


def _too_large(size: int, limit: int, channel: int) -> MessageTooLarge:
    return MessageTooLarge(
        RESOURCE_ERROR,
        f"message of {size} bytes on channel {channel} exceeds max_message_size {limit}",
    )


def _checked_message_size(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
        raise ValueError(f"max_message_size must be 0 or a positive 64-bit integer, not {value!r}")
    return value


def _checked_frame_max(value: int) -> int:
    if value == 0:
        return _spec.FRAME_MAX_UNLIMITED
    if not isinstance(value, int) or not _spec.FRAME_MIN_SIZE <= value <= 0xFFFFFFFF:
        raise ValueError(f"frame_max must be 0 or between 4096 and 4294967295, not {value!r}")
    return value


# ------------------------------------------------------------- encoding


def _encode_str(value: Any, field: str, limit: int) -> bytes:
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise EncodeError(f"{field}: string is not encodable as UTF-8") from None
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
    else:
        raise EncodeError(f"{field}: expected str, got {type(value).__name__}")
    if len(raw) > limit:
        raise EncodeError(f"{field}: {len(raw)} bytes is longer than the {limit} allowed")
    return raw


def _shortstr(value: Any, field: str) -> bytes:
    raw = _encode_str(value, field, 255)
    return bytes((len(raw),)) + raw


def _longstr(value: Any, field: str) -> bytes:
    raw = _encode_str(value, field, 0xFFFFFFFF)
    return _U32.pack(len(raw)) + raw


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int):
        raise EncodeError(f"{field}: expected int, got {type(value).__name__}")
    if not low <= value <= high:
        raise EncodeError(f"{field}: {value} is out of range {low}..{high}")
    return value


def _timestamp_seconds(value: Any, field: str) -> int:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=_UTC)  # a naive datetime is taken as UTC
        seconds = int(value.timestamp())
    elif isinstance(value, time.struct_time):
        seconds = calendar.timegm(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = int(value)
    else:
        raise EncodeError(f"{field}: expected datetime, got {type(value).__name__}")
    return _integer(seconds, field, 0, 0xFFFFFFFFFFFFFFFF)


def _table_integer(value: int, field: str) -> bytes:
    # The smallest type that holds the value, preferring signed ones.
    if -128 <= value <= 127:
        return b"b" + _I8.pack(value)
    if -32768 <= value <= 32767:
        return b"s" + _I16.pack(value)
    if 0 <= value <= 0xFFFF:
        return b"u" + _U16.pack(value)
    if -(2**31) <= value < 2**31:
        return b"I" + _I32.pack(value)
    if 0 <= value <= 0xFFFFFFFF:
        return b"i" + _U32.pack(value)
    if -(2**63) <= value < 2**63:
        return b"l" + _I64.pack(value)
    raise EncodeError(f"{field}: integer {value} does not fit in 64 bits")


def _table_decimal(value: decimal.Decimal, field: str) -> bytes:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise EncodeError(f"{field}: {value} cannot be encoded as a decimal")
    if exponent > 0:
        scale, mantissa = 0, int(value)
    else:
        scale, mantissa = -exponent, int(value.scaleb(-exponent))
    if scale > 255 or not -(2**31) <= mantissa < 2**31:
        raise EncodeError(f"{field}: decimal {value} is out of range")
    return b"D" + bytes((scale,)) + _I32.pack(mantissa)


def _encode_value(value: Any, field: str, depth: int) -> bytes:
    if isinstance(value, str):
        return b"S" + _longstr(value, field)
    if isinstance(value, bool):
        return b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        return _table_integer(value, field)
    if isinstance(value, float):
        return b"d" + _F64.pack(value)
    if isinstance(value, dict):
        return b"F" + _encode_table(value, field, depth + 1)
    # before tuples: a struct_time is one
    if isinstance(value, (datetime.datetime, time.struct_time)):
        return b"T" + _U64.pack(_timestamp_seconds(value, field))
    if isinstance(value, (list, tuple)):
        return b"A" + _encode_array(value, field, depth + 1)
    if value is None:
        return b"V"
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) > 0xFFFFFFFF:
            raise EncodeError(f"{field}: byte array too long")
        return b"x" + _U32.pack(len(raw)) + raw
    if isinstance(value, decimal.Decimal):
        return _table_decimal(value, field)
    raise EncodeError(f"{field}: cannot encode a value of type {type(value).__name__}")


def _encode_table(table: Any, field: str, depth: int = 0) -> bytes:
    if not isinstance(table, dict):
        raise EncodeError(f"{field}: expected dict, got {type(table).__name__}")
    if depth > MAX_DEPTH:
        raise EncodeError(f"{field}: nested more than {MAX_DEPTH} deep")
    parts = []
    for key, value in table.items():
        if not isinstance(key, str):
            raise EncodeError(f"{field}: table keys must be str, got {type(key).__name__}")
        name = f"{field}[{key!r}]"
        parts.append(_shortstr(key, name))
        parts.append(_encode_value(value, name, depth))
    payload = b"".join(parts)
    if len(payload) > 0xFFFFFFFF:
        raise EncodeError(f"{field}: table too long")
    return _U32.pack(len(payload)) + payload


def _encode_array(items: Any, field: str, depth: int) -> bytes:
    if depth > MAX_DEPTH:
        raise EncodeError(f"{field}: nested more than {MAX_DEPTH} deep")
    payload = b"".join(_encode_value(item, f"{field}[{i}]", depth) for i, item in enumerate(items))
    if len(payload) > 0xFFFFFFFF:
        raise EncodeError(f"{field}: array too long")
    return _U32.pack(len(payload)) + payload


def encode_table(table: dict[str, Any] | None) -> bytes:
    """Encode a field table, its 4-byte length first (None is an empty table)."""
    return _encode_table({} if table is None else table, "table")


def _encode_fields(method: Any, fields: _spec.Fields, name: str) -> bytes:
    parts: list[bytes] = []
    bits = -1  # the bit octet being filled; -1 = none open
    bit = 0
    for attribute, kind in fields:
        value = getattr(method, attribute, None)
        field = f"{name}.{attribute}"
        if kind == _spec.BIT:
            if bits < 0 or bit == 8:
                if bits >= 0:
                    parts.append(bytes((bits,)))
                bits, bit = 0, 0
            if value:
                bits |= 1 << bit
            bit += 1
            continue
        if bits >= 0:
            parts.append(bytes((bits,)))
            bits = -1
        parts.append(_encode_argument(value, kind, field))
    if bits >= 0:
        parts.append(bytes((bits,)))
    return b"".join(parts)


def _encode_argument(value: Any, kind: int, field: str) -> bytes:
    if kind == _spec.SHORTSTR:
        return _shortstr("" if value is None else value, field)
    if kind == _spec.LONGSTR:
        return _longstr("" if value is None else value, field)
    if kind == _spec.TABLE:
        return _encode_table({} if value is None else value, field)
    packer = _ARGUMENT_STRUCTS[kind][0]
    high = (1 << (packer.size * 8)) - 1
    return packer.pack(_integer(0 if value is None else value, field, 0, high))


def _method_payload(method: Any) -> bytes:
    try:
        index = method.index
        _, fields = _METHODS[index]
    except (AttributeError, KeyError):
        raise EncodeError(f"not an AMQP method: {method!r}") from None
    return _METHOD_INDEX.pack(index) + _encode_fields(method, fields, method.name)


_getrandbits = random.getrandbits  # reseeded in a forked child
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # version and variant bits
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_message_id() -> str:
    """A random UUID4 in hex, as a message published without a message_id gets."""
    return ((_getrandbits(128) & _UUID4_CLEAR) | _UUID4_SET).to_bytes(16, "big").hex()


def _encode_properties(properties: Any, new_id: str | None = None) -> bytes:
    # new_id: a message_id to send in place of the properties' (which have none)
    if properties is None:
        if new_id is None:
            return b"\x00\x00"
        return _U16.pack(0x0080) + _shortstr(new_id, "properties.message_id")
    if isinstance(properties, MessageBase):
        properties = _message_properties(properties)
    if not isinstance(properties, (BasicProperties, _pamqp_base.BasicProperties)):
        raise EncodeError(f"properties: expected BasicProperties, got {type(properties).__name__}")
    flags = 0
    parts = []
    for name, flag, kind in _spec.PROPERTIES:
        value = getattr(properties, name, None)
        if new_id is not None and name == "message_id":
            value = new_id
        if value is None:
            continue
        field = f"properties.{name}"
        if kind == _spec.SHORTSTR:
            if value == "":
                continue  # an empty string property is sent as absent
            parts.append(_shortstr(value, field))
        elif kind == _spec.TABLE:
            parts.append(_encode_table(value, field))
        elif kind == _spec.OCTET:
            parts.append(bytes((_integer(value, field, 0, 255),)))
        else:
            parts.append(_U64.pack(_timestamp_seconds(value, field)))
        flags |= flag
    return _U16.pack(flags) + b"".join(parts)


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _FRAME_HEADER.pack(kind, channel, len(payload)) + payload + _FRAME_END


def _check_channel(channel: Any) -> int:
    return _integer(channel, "channel", 0, 0xFFFF)


class FrameWriter:
    """Encodes frames into one pending buffer; :meth:`take` hands it out.

    Every call appends whole frames or nothing: a value that cannot be
    encoded raises :class:`EncodeError` and leaves the buffer as it was.

    :param frame_max: the largest frame to send, header and end octet
        included; set it again after Connection.Tune (0 means no limit).
    """

    def __init__(self, frame_max: int = _spec.FRAME_MAX_DEFAULT) -> None:
        self._pieces: list[bytes | memoryview] = []
        self._buffer = bytearray()
        self._pending = 0
        self._frame_max = _spec.FRAME_MAX_DEFAULT
        self.frame_max = frame_max

    @property
    def frame_max(self) -> int:
        """The largest frame sent (0 = no limit)."""
        return 0 if self._frame_max == _spec.FRAME_MAX_UNLIMITED else self._frame_max

    @frame_max.setter
    def frame_max(self, value: int) -> None:
        self._frame_max = _checked_frame_max(value)

    def __len__(self) -> int:
        """Bytes waiting to be taken."""
        return self._pending + len(self._buffer)

    def take(self) -> list[bytes | memoryview]:
        """Hand out everything encoded so far, for ``transport.writelines``."""
        if self._buffer:
            self._pieces.append(bytes(self._buffer))
            self._buffer.clear()
        pieces, self._pieces = self._pieces, []
        self._pending = 0
        return pieces

    def protocol_header(self) -> None:
        """Append the AMQP 0-9-1 protocol header that opens a connection."""
        self._buffer += _spec.PROTOCOL_HEADER

    def heartbeat(self) -> None:
        """Append a heartbeat frame."""
        self._buffer += _spec.HEARTBEAT_FRAME

    def method(self, channel: int, method: Any) -> None:
        """Append a method frame; ``method`` is a pamqp command or a hot-path class."""
        channel = _check_channel(channel)
        if getattr(method, "index", None) in _CONTENT_METHODS:
            raise EncodeError(f"{method.name} carries content: use content() or publish()")
        self._buffer += self._checked_frame(_spec.FRAME_METHOD, channel, _method_payload(method))

    def _checked_frame(self, kind: int, channel: int, payload: bytes) -> bytes:
        if len(payload) > self._frame_max - _spec.FRAME_OVERHEAD:
            raise EncodeError(
                f"frame of {len(payload) + 8} bytes exceeds frame_max {self._frame_max}"
            )
        return _frame(kind, channel, payload)

    def content(
        self,
        channel: int,
        method: Any,
        body: bytes | bytearray | memoryview,
        properties: Any = None,
    ) -> None:
        """Append a content-carrying method, its content header and body frames."""
        self._content(channel, method, body, properties, None)

    def _content(
        self,
        channel: int,
        method: Any,
        body: bytes | bytearray | memoryview,
        properties: Any,
        new_id: str | None,
    ) -> None:
        channel = _check_channel(channel)
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise EncodeError(f"body: expected bytes, got {type(body).__name__}")
        if getattr(method, "index", None) not in _CONTENT_METHODS:
            name = getattr(method, "name", type(method).__name__)
            raise EncodeError(f"{name} carries no content")
        if isinstance(body, memoryview):
            body = body.cast("B") if body.contiguous else body.tobytes()
        size = len(body)
        head = self._checked_frame(_spec.FRAME_METHOD, channel, _method_payload(method))
        head += self._checked_frame(
            _spec.FRAME_HEADER,
            channel,
            _U16.pack(_spec.BASIC_CLASS_ID)
            + b"\x00\x00"
            + _U64.pack(size)
            + _encode_properties(properties, new_id),
        )
        self._buffer += head
        chunk = self._frame_max - _spec.FRAME_OVERHEAD
        if size < _spec.ZERO_COPY_MIN or not isinstance(body, bytes):
            for offset in range(0, size, chunk):
                piece = body[offset : offset + chunk]
                self._buffer += _FRAME_HEADER.pack(_spec.FRAME_BODY, channel, len(piece))
                self._buffer += piece
                self._buffer += _FRAME_END
            return
        # Large immutable body: frame headers around memoryview slices, no copy.
        view = memoryview(body)
        for offset in range(0, size, chunk):
            piece = view[offset : offset + chunk]
            self._buffer += _FRAME_HEADER.pack(_spec.FRAME_BODY, channel, len(piece))
            self._pieces.append(bytes(self._buffer))
            self._pending += len(self._buffer) + len(piece)
            self._pieces.append(piece)
            self._buffer = bytearray(_FRAME_END)

    def publish(
        self,
        channel: int,
        body: bytes | bytearray | memoryview,
        exchange: str = "",
        routing_key: str = "",
        properties: Any = None,
        mandatory: bool = False,
        immediate: bool = False,
        new_id: bool = False,
        return_id: bool = False,
    ) -> str | None:
        """Append a Basic.Publish with its content header and body frames.

        With ``new_id``, a message whose properties have no message_id is
        sent with a random UUID4 (hex) as its message_id; the properties are
        not changed. With ``return_id`` the message_id sent is returned (what
        a Basic.Return would carry back; None without one), else None.
        """
        message_id = getattr(properties, "message_id", None)
        stamped = None
        if new_id and (message_id is None or message_id == ""):
            message_id = stamped = new_message_id()
        self._content(
            channel,
            BasicPublish(exchange, routing_key, mandatory, immediate),
            body,
            properties,
            stamped,
        )
        return message_id if return_id else None

    def ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> None:
        """Append a Basic.Ack."""
        self.method(channel, BasicAck(delivery_tag, multiple))

    def nack(
        self, channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = True
    ) -> None:
        """Append a Basic.Nack."""
        self.method(channel, BasicNack(delivery_tag, multiple, requeue))

    def reject(self, channel: int, delivery_tag: int, requeue: bool = True) -> None:
        """Append a Basic.Reject."""
        self.method(channel, BasicReject(delivery_tag, requeue))


# ------------------------------------------------- running callback coroutines


def run_coroutines(
    queue: Any,
    cancel_asked: Callable[[Any], Any],
    task: Any,
    failed: Callable[[Exception], Any],
    cancelled_error: type[BaseException],
) -> tuple[Any, contextvars.Context, Any] | None:
    """Run the coroutines waiting in ``queue`` (a deque) one after another.

    What a driver Task of ``amqpfast.core._drive`` does for each handler: step
    it once in a fresh copy of the current context; most finish there. Stops
    before the next one when ``cancel_asked(task)`` is true. A handler that
    raises an Exception goes to ``failed(exc)``, one that raises
    ``cancelled_error`` ends quietly; others propagate. Returns ``(coroutine,
    its context, what it waits on)`` for the first one that waits, else None.
    """
    while queue and not cancel_asked(task):
        coro = queue.popleft()
        context = contextvars.copy_context()
        try:
            waiting_on = context.run(coro.send, None)
        except StopIteration:
            continue
        except Exception as exc:
            failed(exc)
            continue
        except cancelled_error:
            continue
        return coro, context, waiting_on
    return None


# ------------------------------------------------- an awaitable done already


class Finished(tuple[()]):
    """An awaitable that is done already: ``await`` gives None at once.

    What a call returns when there is nothing to wait for (an ack, a publish
    without confirms). It has a finished coroutine's ``send``, ``throw`` and
    ``close``, so ``asyncio.create_task`` takes it as it takes a coroutine.
    """

    __slots__ = ()
    # awaiting it iterates an empty tuple: done at once, with no Python frame
    __await__ = tuple.__iter__

    def send(self, value: Any) -> Any:
        raise StopIteration

    def throw(self, error: Any, value: Any = None, traceback: Any = None) -> Any:
        if value is None:
            value = error if isinstance(error, BaseException) else error()
        if traceback is not None:
            value = value.with_traceback(traceback)
        raise value

    def close(self) -> None:
        pass
