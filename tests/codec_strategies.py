"""Hypothesis strategies and small helpers shared by the codec tests.

Strategies come in two flavours: values our codec must round-trip, and the
narrower values pamqp can take part in (its quirks are explained where the
strategy is narrowed).
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import os
import string
import struct
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st

from amqpfast import _spec
from amqpfast.exceptions import EncodeError

UTC = datetime.UTC
IMPLEMENTATIONS = {"c": "amqpfast._codec", "python": "amqpfast._codec_py"}
CONTENT_INDEXES = frozenset(
    (_spec.BASIC_PUBLISH, _spec.BASIC_RETURN, _spec.BASIC_DELIVER, _spec.BASIC_GET_OK)
)
HOT_NAMES = (
    "BasicPublish",
    "BasicReturn",
    "BasicDeliver",
    "BasicGetOk",
    "BasicAck",
    "BasicReject",
    "BasicNack",
)


# ------------------------------------------------------------ selection


def no_extensions() -> bool:
    """True in the pure-Python run (AMQPFAST_NO_EXTENSIONS set and not "0")."""
    return os.environ.get("AMQPFAST_NO_EXTENSIONS", "") not in ("", "0")


def load_codec(implementation: str) -> ModuleType:
    """Import one implementation; skip "c" in the pure-Python run, fail if it is missing."""
    if implementation == "c" and no_extensions():
        pytest.skip("AMQPFAST_NO_EXTENSIONS is set: the compiled codec is not tested")
    try:
        return importlib.import_module(IMPLEMENTATIONS[implementation])
    except ImportError as error:
        pytest.fail(f"cannot import {IMPLEMENTATIONS[implementation]}: {error!r}")


def examples(count: int) -> settings:
    """Hypothesis settings: ``count`` examples, no deadline (CI machines are slow).

    ``AMQPFAST_TEST_EXAMPLES`` scales the count (a fraction): the package
    step's reruns of these tests on each built wheel use fewer, as the full
    count has run on the same code in the main test run.
    """
    scale = float(os.environ.get("AMQPFAST_TEST_EXAMPLES", "1"))
    return settings(max_examples=max(1, round(count * scale)), deadline=None)


# ------------------------------------------------------------ wire helpers


def frame(kind: int, channel: int, payload: bytes, end: int = 0xCE) -> bytes:
    """One raw frame, built by hand."""
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + bytes((end,))


def method_frame(channel: int, class_id: int, method_id: int, arguments: bytes = b"") -> bytes:
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + arguments)


def header_frame(channel: int, body_size: int, properties: bytes = b"\x00\x00") -> bytes:
    return frame(2, channel, struct.pack(">HHQ", 60, 0, body_size) + properties)


def body_frame(channel: int, body: bytes) -> bytes:
    return frame(3, channel, body)


def shortstr(value: bytes) -> bytes:
    return bytes((len(value),)) + value


def longstr(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def table_bytes(payload: bytes) -> bytes:
    """A field table from its already encoded entries."""
    return struct.pack(">I", len(payload)) + payload


# Basic.Deliver arguments: consumer tag, delivery tag, redelivered, exchange, routing key.
DELIVER_ARGS = shortstr(b"ctag") + struct.pack(">QB", 7, 0) + shortstr(b"") + shortstr(b"rk")
HEARTBEAT = frame(8, 0, b"")


def split_frames(data: bytes) -> list[bytes]:
    """Cut a well-formed stream of frames (no protocol header) at frame boundaries."""
    frames = []
    pos = 0
    while pos < len(data):
        size = struct.unpack_from(">I", data, pos + 3)[0]
        frames.append(data[pos : pos + size + 8])
        pos += size + 8
    return frames


def joined(pieces: Iterable[bytes | memoryview]) -> bytes:
    return b"".join(bytes(piece) for piece in pieces)


def feed_in_pieces(reader: Any, data: bytes, cuts: Iterable[int] = ()) -> list[Any]:
    """Feed ``data`` cut at the given offsets; return all events."""
    events: list[Any] = []
    start = 0
    for cut in sorted(set(cuts)):
        if 0 < cut < len(data):
            events += reader.feed(data[start:cut])
            start = cut
    events += reader.feed(data[start:])
    return events


def feed_bytewise(reader: Any, data: bytes) -> list[Any]:
    events: list[Any] = []
    for i in range(len(data)):
        events += reader.feed(data[i : i + 1])
    return events


# ------------------------------------------------------------ normalising


def typed(value: Any, ordered: bool = True) -> Any:
    """A value with its type spelled out, so that True != 1 and b"a" != "a".

    ``ordered=False`` sorts table entries (pamqp sorts keys when it encodes).
    """
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", struct.pack(">d", value))  # exact, NaN and -0.0 included
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(value))
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, decimal.Decimal):
        return ("decimal", value)
    if isinstance(value, datetime.datetime):
        return ("datetime", value, value.utcoffset())
    if isinstance(value, (list, tuple)):
        return ("array", tuple(typed(item, ordered) for item in value))
    if isinstance(value, dict):
        items = [(key, typed(item, ordered)) for key, item in value.items()]
        return ("table", tuple(items if ordered else sorted(items, key=lambda kv: kv[0])))
    if value is None:
        return ("void",)
    raise TypeError(f"no typed form for {value!r}")


def method_fields(method: Any, skip: Sequence[str] = ()) -> dict[str, Any]:
    """A method's arguments as a dict of typed values (hot class or pamqp command)."""
    return {key: typed(value, False) for key, value in method if key not in skip}


def properties_fields(properties: Any) -> dict[str, Any]:
    """BasicProperties (ours or pamqp's) as a dict; pamqp's '' cluster_id counts as absent."""
    result = {}
    for name in _spec.PROPERTY_NAMES:
        value = getattr(properties, name)
        result[name] = None if value is None or value == "" else typed(value, False)
    return result


def describe(event: Any) -> tuple[Any, ...]:
    """An event as plain data: type name and attributes, for comparing two readers."""
    kind = type(event).__name__
    if kind == "MethodFrame":
        return (kind, event.channel, describe_method(event.method))
    if kind == "ContentMessage":
        return (
            kind,
            event.channel,
            describe_method(event.method),
            tuple((key, typed(value)) for key, value in event.properties),
            type(event.body).__name__,
            bytes(event.body),
        )
    if kind == "Heartbeat":
        return (kind, event.channel)
    if kind == "ProtocolHeader":
        return (kind, event.major, event.minor, event.revision)
    raise AssertionError(f"unknown event {event!r}")


def describe_method(method: Any) -> tuple[Any, ...]:
    return (
        type(method).__name__,
        method.name,
        method.index,
        tuple((key, typed(value)) for key, value in method),
    )


# ------------------------------------------------------------ values

# Lone surrogates are not UTF-8: a str holding one cannot go on the wire.
TEXT_CHARS = st.characters(exclude_categories=("Cs",))


def short_strings(max_bytes: int = 255) -> st.SearchStrategy[str]:
    """Any text whose UTF-8 form fits in ``max_bytes`` (a shortstr holds 255)."""
    # Up to 4 bytes a character, so max_bytes // 4 characters always fit;
    # the long ASCII branch reaches the limit itself.
    return st.one_of(
        st.text(TEXT_CHARS, max_size=max_bytes // 4),
        st.text(string.printable, min_size=max_bytes - 20, max_size=max_bytes),
    )


LONG_STRINGS = st.text(TEXT_CHARS, max_size=400)
# Message bodies up to ~100 kB: a short pattern repeated, so that big ones stay cheap.
BODIES = st.tuples(st.binary(max_size=64), st.integers(0, 1500)).map(lambda t: t[0] * t[1])
TABLE_KEYS = short_strings(255)
INT64 = st.integers(-(2**63), 2**63 - 1)
# Timestamps are whole seconds; above 0xFFFFFFFF a decoder takes them as milliseconds.
TIMESTAMPS = st.integers(0, 0xFFFFFFFF).map(
    lambda seconds: datetime.datetime.fromtimestamp(seconds, UTC)
)
DECIMALS = st.builds(
    lambda mantissa, scale: decimal.Decimal(mantissa).scaleb(-scale),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 255),
)


def containers(
    leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[str]
) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=10,
    )


# Every type our encoder emits: b s u I i l (ints by size), t, d, S, x, V, T, D, A, F.
FIELD_LEAVES = st.one_of(
    st.booleans(),
    INT64,
    st.floats(allow_nan=False),
    st.text(TEXT_CHARS, max_size=40),
    st.binary(max_size=40),
    st.none(),
    TIMESTAMPS,
    DECIMALS,
)
FIELD_VALUES = containers(FIELD_LEAVES, st.text(TEXT_CHARS, max_size=20))
FIELD_TABLES = st.dictionaries(TABLE_KEYS, FIELD_VALUES, max_size=6)

# What pamqp can encode, and decode back to the same value:
# - floats go out as float32 'f', so only float32-representable values compare equal;
# - only bytearray (not bytes) is encoded as 'x';
# - keys longer than 128 bytes are truncated, so keys stay shorter;
# - lists only (a tuple is refused).
PAMQP_KEYS = short_strings(128)
PAMQP_LEAVES = st.one_of(
    st.booleans(),
    INT64,
    st.floats(width=32, allow_nan=False),
    st.text(TEXT_CHARS, max_size=40),
    st.binary(max_size=40).map(bytearray),
    st.none(),
    TIMESTAMPS,
    DECIMALS,
)
PAMQP_TABLES = st.dictionaries(
    PAMQP_KEYS, containers(PAMQP_LEAVES, st.text(TEXT_CHARS, max_size=20)), max_size=6
)


# ------------------------------------------------------------ methods


def argument_values(kind: int, tables: st.SearchStrategy[Any], longlong_max: int) -> Any:
    """Values of one method argument type; strings are UTF-8 text."""
    return {
        _spec.BIT: st.booleans(),
        _spec.OCTET: st.integers(0, 0xFF),
        _spec.SHORT: st.integers(0, 0xFFFF),
        _spec.LONG: st.integers(0, 0xFFFFFFFF),
        _spec.LONGLONG: st.integers(0, longlong_max),
        _spec.SHORTSTR: short_strings(),
        _spec.LONGSTR: LONG_STRINGS,
        _spec.TABLE: tables,
    }[kind]


def build_method(cls: type, values: dict[str, Any]) -> Any:
    """A method instance with exactly these arguments (pamqp's __init__ would validate)."""
    method = object.__new__(cls)
    for name, value in values.items():
        setattr(method, name, value)
    return method


def methods(index: int) -> st.SearchStrategy[Any]:
    """Instances of the pamqp class for ``index`` with any value the wire allows."""
    cls, fields = _spec.METHODS[index]
    arguments = {name: argument_values(kind, FIELD_TABLES, 2**64 - 1) for name, kind in fields}
    return st.fixed_dictionaries(arguments).map(lambda values: build_method(cls, values))


# pamqp decodes longlong as signed, so delivery tags stay below 2**63.
PAMQP_LONGLONG_MAX = 2**63 - 1

# Arguments pamqp's validate() pins to one value (deprecated fields).
PAMQP_PINNED = {
    "ticket": 0,
    "out_of_band": "0",
    "known_hosts": "",
    "insist": False,
    "cluster_id": "",
    "channel_id": "0",
    "capabilities": "",
}
# pamqp validates exchange and queue names against a pattern and a length.
PAMQP_NAME = st.text(string.ascii_letters + string.digits + "-_.:@#,/+ ", max_size=127)
PAMQP_NAMED = {"exchange", "source", "destination", "queue"}


def pamqp_methods(index: int) -> st.SearchStrategy[Any]:
    """Instances pamqp itself can marshal and unmarshal to the same values."""
    cls, fields = _spec.METHODS[index]
    arguments: dict[str, Any] = {}
    for name, kind in fields:
        if name in PAMQP_PINNED:
            arguments[name] = st.just(PAMQP_PINNED[name])
        elif name in PAMQP_NAMED:
            arguments[name] = PAMQP_NAME
        elif name == "virtual_host":
            arguments[name] = st.text(TEXT_CHARS, max_size=63)
        else:
            arguments[name] = argument_values(kind, PAMQP_TABLES, PAMQP_LONGLONG_MAX)
    return st.fixed_dictionaries(arguments).map(lambda values: _validated(cls, values))


def _validated(cls: type, values: dict[str, Any]) -> Any:
    method = build_method(cls, values)
    method.validate()  # a ValueError here means the strategy is too wide for pamqp
    return method


def hot_arguments(index: int, longlong_max: int = 2**64 - 1) -> st.SearchStrategy[Any]:
    """(hot class name, constructor arguments) for the method ``index``."""
    name = next(n for n in HOT_NAMES if n[len("Basic") :] == _spec.METHODS[index][0].__name__)
    _, fields = _spec.METHODS[index]
    arguments = {
        field: argument_values(kind, FIELD_TABLES, longlong_max)
        for field, kind in fields
        if field != "ticket"  # Basic.Publish's ticket is always 0 and not kept
    }
    return st.tuples(st.just(name), st.fixed_dictionaries(arguments))


def hot_methods(codec: ModuleType, index: int, longlong_max: int = 2**64 - 1) -> Any:
    """Instances of the codec's own hot class for ``index``, built through its constructor."""
    return hot_arguments(index, longlong_max).map(
        lambda named: getattr(codec, named[0])(**named[1])
    )


# ------------------------------------------------------------ properties


def properties(
    factory: Callable[..., Any],
    tables: st.SearchStrategy[Any] = FIELD_TABLES,
    pamqp: bool = False,
) -> st.SearchStrategy[Any]:
    """BasicProperties with each of the 14 present or absent.

    ``pamqp=True`` keeps to what pamqp's Basic.Properties accepts: its
    validate() wants delivery_mode 1 or 2 and an empty cluster_id. Empty
    strings are left out: both encoders send '' as absent.
    """
    text = short_strings().filter(bool)
    octet = st.sampled_from([1, 2]) if pamqp else st.integers(0, 255)
    values = {
        "content_type": text,
        "content_encoding": text,
        "headers": tables,
        "delivery_mode": octet,
        "priority": st.integers(0, 255),
        "correlation_id": text,
        "reply_to": text,
        "expiration": text,
        "message_id": text,
        "timestamp": TIMESTAMPS,
        "message_type": text,
        "user_id": text,
        "app_id": text,
        "cluster_id": text,
    }
    optional = {name: st.none() | strategy for name, strategy in values.items()}
    if pamqp:
        optional["cluster_id"] = st.just("")
    return st.fixed_dictionaries(optional).map(lambda kwargs: factory(**kwargs))


def all_properties(factory: Callable[..., Any]) -> st.SearchStrategy[Any]:
    """BasicProperties with all 14 set."""
    text = short_strings().filter(bool)
    return st.builds(
        factory,
        content_type=text,
        content_encoding=text,
        headers=FIELD_TABLES,
        delivery_mode=st.integers(0, 255),
        priority=st.integers(0, 255),
        correlation_id=text,
        reply_to=text,
        expiration=text,
        message_id=text,
        timestamp=TIMESTAMPS,
        message_type=text,
        user_id=text,
        app_id=text,
        cluster_id=text,
    )


# ------------------------------------------------------------ streams

INBOUND_CONTENT = (_spec.BASIC_DELIVER, _spec.BASIC_RETURN, _spec.BASIC_GET_OK)
SIMPLE_METHODS = sorted(index for index in _spec.METHODS if index not in CONTENT_INDEXES)


@st.composite
def streams(draw: st.DrawFn, codec: ModuleType, frame_max: int = 4096) -> bytes:
    """A valid broker-to-client byte stream, written by ``codec``'s own writer.

    Mixes method frames, heartbeats and messages whose bodies span several
    frames; starts with a protocol header sometimes.
    """
    writer = codec.FrameWriter(frame_max=frame_max)
    if draw(st.booleans()):
        writer.protocol_header()
    for _ in range(draw(st.integers(1, 6))):
        channel = draw(st.integers(0, 3))
        what = draw(st.sampled_from(["method", "content", "heartbeat"]))
        try:
            if what == "heartbeat":
                writer.heartbeat()
            elif what == "method":
                writer.method(channel, draw(methods(draw(st.sampled_from(SIMPLE_METHODS)))))
            else:
                method = draw(hot_methods(codec, draw(st.sampled_from(INBOUND_CONTENT))))
                props = draw(properties(codec.BasicProperties))
                writer.content(channel, method, draw(st.binary(max_size=3 * frame_max)), props)
        except EncodeError:
            pass  # a table too big for one frame: the writer left its buffer as it was
    return joined(writer.take())


# Broker frames as they may arrive: any of the known methods with random
# arguments, random header and body frames, to reach deep into the decoders.
@st.composite
def random_frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from([1, 1, 1, 2, 3, 8, draw(st.integers(0, 255))]))
    channel = draw(st.sampled_from([0, 1, draw(st.integers(0, 0xFFFF))]))
    payload = draw(st.binary(max_size=60))
    if kind == 1 and draw(st.booleans()):
        payload = struct.pack(">I", draw(st.sampled_from(sorted(_spec.METHODS)))) + payload
    elif kind == 2 and draw(st.booleans()):
        payload = struct.pack(">HHQ", 60, 0, draw(st.integers(0, 100))) + payload
    end = draw(st.sampled_from([0xCE, 0xCE, 0xCE, draw(st.integers(0, 255))]))
    return frame(kind, channel, payload, end)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, inserted, deleted or overwritten."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "overwrite", "truncate"]))
        if operation == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif operation == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif operation == "overwrite":
            # interesting values: zero, all ones, type codes, frame end, big lengths
            value = draw(st.sampled_from([b"\x00", b"\xff", b"\xce", b"A", b"F", b"T", b"\x7f"]))
            data[pos : pos + 1] = value
        else:
            del data[pos:]
    return bytes(data)


@st.composite
def payload_mutated(draw: st.DrawFn, stream: bytes) -> bytes:
    """``stream`` with one frame's payload mutated and its size field fixed to match.

    Framing stays valid, so the damage reaches the method, property and table decoders.
    """
    header = b""
    if stream.startswith(b"AMQP"):
        header, stream = stream[:8], stream[8:]
    frames = split_frames(stream)
    if frames:
        i = draw(st.integers(0, len(frames) - 1))
        kind, channel = struct.unpack_from(">BH", frames[i])
        frames[i] = frame(kind, channel, draw(mutated(frames[i][7:-1])))
    return header + b"".join(frames)
