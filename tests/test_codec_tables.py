"""Field tables and arrays: every type RabbitMQ uses, both directions."""

from __future__ import annotations

import datetime
import decimal
import math
import re
import struct
import time

import pytest
from codec_strategies import (
    FIELD_TABLES,
    FIELD_VALUES,
    UTC,
    examples,
    longstr,
    shortstr,
    table_bytes,
    typed,
)
from hypothesis import given
from hypothesis import strategies as st

from amqpfast._codec_py import MAX_DEPTH
from amqpfast.exceptions import EncodeError, ProtocolError


def entry(key: bytes, kind: bytes, value: bytes) -> bytes:
    return shortstr(key) + kind + value


@examples(200)
@given(table=FIELD_TABLES)
def test_tables_round_trip(codec, table):
    decoded = codec.decode_table(codec.encode_table(table))

    assert typed(decoded) == typed(table)


@examples(100)
@given(items=st.lists(FIELD_VALUES, max_size=8))
def test_arrays_round_trip(codec, items):
    decoded = codec.decode_table(codec.encode_table({"array": items}))

    assert typed(decoded["array"]) == typed(items)


def test_decode_keeps_wire_order(codec):
    data = table_bytes(entry(b"b", b"b", b"\x01") + entry(b"a", b"b", b"\x02"))

    assert list(codec.decode_table(data)) == ["b", "a"]


def stable_id(value: object) -> str:
    """A parameter's repr without object addresses: the same test ids in every
    process and run (``pytest --deselect`` and ``-k`` can name them)."""
    return re.sub(r" at 0x[0-9a-f]+", "", repr(value))


# value -> the bytes our encoder must choose (after the key)
ENCODINGS = [
    (True, b"t\x01"),
    (False, b"t\x00"),
    (0, b"b\x00"),
    (-128, b"b\x80"),
    (127, b"b\x7f"),
    (128, b"s\x00\x80"),
    (-129, b"s\xff\x7f"),
    (32767, b"s\x7f\xff"),
    (32768, b"u\x80\x00"),
    (65535, b"u\xff\xff"),
    (65536, b"I" + struct.pack(">i", 65536)),
    (-32769, b"I" + struct.pack(">i", -32769)),
    (2**31 - 1, b"I" + struct.pack(">i", 2**31 - 1)),
    (-(2**31), b"I" + struct.pack(">i", -(2**31))),
    (2**31, b"i" + struct.pack(">I", 2**31)),
    (2**32 - 1, b"i" + struct.pack(">I", 2**32 - 1)),
    (2**32, b"l" + struct.pack(">q", 2**32)),
    (-(2**31) - 1, b"l" + struct.pack(">q", -(2**31) - 1)),
    (2**63 - 1, b"l" + struct.pack(">q", 2**63 - 1)),
    (-(2**63), b"l" + struct.pack(">q", -(2**63))),
    (1.5, b"d" + struct.pack(">d", 1.5)),
    ("héllo", b"S" + longstr("héllo".encode())),
    (b"\x00\xff", b"x" + longstr(b"\x00\xff")),
    (bytearray(b"ab"), b"x" + longstr(b"ab")),
    (memoryview(b"cd"), b"x" + longstr(b"cd")),
    (None, b"V"),
    (datetime.datetime(2020, 1, 1, tzinfo=UTC), b"T" + struct.pack(">Q", 1577836800)),
    (datetime.datetime(2020, 1, 1), b"T" + struct.pack(">Q", 1577836800)),  # naive is UTC
    (decimal.Decimal("3.14"), b"D\x02" + struct.pack(">i", 314)),
    (decimal.Decimal("-0.5"), b"D\x01" + struct.pack(">i", -5)),
    (decimal.Decimal("7"), b"D\x00" + struct.pack(">i", 7)),
    (decimal.Decimal("1E+3"), b"D\x00" + struct.pack(">i", 1000)),
    ([1, "a"], b"A" + table_bytes(b"b\x01" + b"S" + longstr(b"a"))),
    ((1, "a"), b"A" + table_bytes(b"b\x01" + b"S" + longstr(b"a"))),
    ([], b"A\x00\x00\x00\x00"),
    ({"k": None}, b"F" + table_bytes(entry(b"k", b"V", b""))),
    ({}, b"F\x00\x00\x00\x00"),
]


@pytest.mark.parametrize(("value", "encoded"), ENCODINGS, ids=stable_id)
def test_encoder_chooses_the_type(codec, value, encoded):
    assert codec.encode_table({"k": value}) == table_bytes(shortstr(b"k") + encoded)


# A struct_time is a tuple: it must not go out as an array.
def test_struct_time_encodes_as_timestamp(codec):
    value = time.gmtime(1577836800)

    encoded = codec.encode_table({"k": value})

    assert encoded == table_bytes(entry(b"k", b"T", struct.pack(">Q", 1577836800)))


def test_none_and_empty_encode_the_empty_table(codec):
    assert codec.encode_table({}) == b"\x00\x00\x00\x00"
    assert codec.encode_table(None) == b"\x00\x00\x00\x00"
    assert codec.decode_table(b"\x00\x00\x00\x00") == {}


# Hand-built values, including the types our encoder never emits (B, L, f).
DECODINGS = [
    (b"t\x01", True),
    (b"t\x00", False),
    (b"t\x02", True),  # any non-zero octet is true
    (b"b\xff", -1),
    (b"B\xff", 255),
    (b"s\xff\xfe", -2),
    (b"u\xff\xfe", 65534),
    (b"I\xff\xff\xff\xfd", -3),
    (b"i\xff\xff\xff\xfd", 2**32 - 3),
    (b"l\xff\xff\xff\xff\xff\xff\xff\xfc", -4),
    (b"L\xff\xff\xff\xff\xff\xff\xff\xfc", 2**64 - 4),
    (b"f" + struct.pack(">f", 0.25), 0.25),
    (b"f" + struct.pack(">f", -1572864.5), -1572864.5),
    (b"d" + struct.pack(">d", 1e300), 1e300),
    (b"D\x03" + struct.pack(">i", -12345), decimal.Decimal("-12.345")),
    (b"D\x00" + struct.pack(">i", 2**31 - 1), decimal.Decimal(2**31 - 1)),
    (b"S" + longstr("ünï".encode()), "ünï"),
    (b"S" + longstr(b"\xff\xfe"), b"\xff\xfe"),  # not UTF-8: left as bytes
    (b"S" + longstr(b""), ""),
    (b"x" + longstr(b"\x00\x01"), b"\x00\x01"),
    (b"V", None),
    (b"T" + struct.pack(">Q", 0), datetime.datetime(1970, 1, 1, tzinfo=UTC)),
    (b"T" + struct.pack(">Q", 0xFFFFFFFF), datetime.datetime.fromtimestamp(0xFFFFFFFF, UTC)),
    (
        b"T" + struct.pack(">Q", 1_600_000_000_500),  # above 32 bits: milliseconds
        datetime.datetime(2020, 9, 13, 12, 26, 40, 500000, tzinfo=UTC),
    ),
    (b"A" + table_bytes(b"b\x01" + b"V" + b"A\x00\x00\x00\x00"), [1, None, []]),
    (b"F" + table_bytes(entry(b"n", b"F", b"\x00\x00\x00\x00")), {"n": {}}),
]


@pytest.mark.parametrize(("encoded", "value"), DECODINGS, ids=repr)
def test_decoder_reads_every_type(codec, encoded, value):
    decoded = codec.decode_table(table_bytes(shortstr(b"k") + encoded))

    assert typed(decoded) == typed({"k": value})


def test_float32_nan_and_double_infinity(codec):
    data = table_bytes(
        entry(b"nan", b"f", struct.pack(">f", math.nan))
        + entry(b"inf", b"d", struct.pack(">d", -math.inf))
    )

    decoded = codec.decode_table(data)

    assert math.isnan(decoded["nan"])
    assert decoded["inf"] == -math.inf


def test_nan_round_trips_as_nan(codec):
    assert math.isnan(codec.decode_table(codec.encode_table({"k": math.nan}))["k"])


def test_decoded_bytes_and_tuples_come_back_as_bytes_and_lists(codec):
    decoded = codec.decode_table(
        codec.encode_table({"b": bytearray(b"ab"), "t": (1, (2,)), "m": memoryview(b"x")})
    )

    assert typed(decoded) == typed({"b": b"ab", "t": [1, [2]], "m": b"x"})
    assert type(decoded["b"]) is bytes


def test_decoded_timestamps_are_aware_utc(codec):
    decoded = codec.decode_table(codec.encode_table({"t": datetime.datetime(2001, 2, 3, 4, 5, 6)}))

    assert decoded["t"] == datetime.datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert decoded["t"].tzinfo is not None


def test_key_of_255_bytes_is_allowed(codec):
    key = "k" * 255

    assert codec.decode_table(codec.encode_table({key: 1})) == {key: 1}


def test_key_that_is_not_utf8_survives_a_round_trip(codec):
    data = table_bytes(entry(b"\xffkey", b"b", b"\x01"))

    assert codec.encode_table(codec.decode_table(data)) == data


def nested(depth: int) -> object:
    """``depth`` containers, tables and arrays taking turns, around one leaf."""
    value: object = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


def test_nesting_up_to_the_limit_round_trips(codec):
    value = nested(MAX_DEPTH)

    assert typed(codec.decode_table(codec.encode_table({"v": value}))) == typed({"v": value})


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_nesting_past_the_limit_raises_encode_error(codec, depth):
    with pytest.raises(EncodeError, match="nested"):
        codec.encode_table({"v": nested(depth)})


# ------------------------------------------------------------ encode errors


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"k" * 256: 1}, "k" * 20),
        ({1: "a"}, "table"),
        ({"obj": object()}, "obj"),
        ({"set": {1, 2}}, "set"),
        ({"big": 2**63}, "big"),
        ({"small": -(2**63) - 1}, "small"),
        ({"nan": decimal.Decimal("NaN")}, "nan"),
        ({"wide": decimal.Decimal(2**31)}, "wide"),
        ({"fine": decimal.Decimal("1E-256")}, "fine"),
        ({"before_1970": datetime.datetime(1969, 12, 31, tzinfo=UTC)}, "before_1970"),
        ({"surrogate": "\ud800"}, "surrogate"),
        ({"outer": {"inner": [1, object()]}}, "inner"),
    ],
    ids=stable_id,
)
def test_unencodable_values_raise_encode_error_naming_the_key(codec, table, field):
    with pytest.raises(EncodeError, match=field):
        codec.encode_table(table)


def test_encode_table_refuses_a_non_dict(codec):
    with pytest.raises(EncodeError):
        codec.encode_table([("a", 1)])


def test_encode_error_is_a_value_error(codec):
    with pytest.raises(ValueError):
        codec.encode_table({"k": object()})


# ------------------------------------------------------------ decode errors


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x00",  # table length cut short
        b"\x00\x00\x00\x05\x01k",  # length beyond the data
        table_bytes(b"\x05ab"),  # key longer than the table
        table_bytes(shortstr(b"k")),  # key without a value
        table_bytes(entry(b"k", b"I", b"\x00\x01")),  # int cut short
        table_bytes(entry(b"k", b"S", b"\x00\x00\x00\x09abc")),  # string beyond the table
        table_bytes(entry(b"k", b"x", b"\x00\x00")),  # byte array length cut short
        table_bytes(entry(b"k", b"A", b"\x00\x00\x00\x02b")),  # array beyond its data
        table_bytes(entry(b"k", b"D", b"\x01\x00")),  # decimal cut short
        table_bytes(entry(b"k", b"T", b"\x00" * 7)),  # timestamp cut short
        table_bytes(entry(b"k", b"t", b"")),  # boolean without its octet
        table_bytes(entry(b"k", b"F", table_bytes(b"\x01"))),  # nested table broken
        table_bytes(entry(b"k", b"A", table_bytes(b"I\x00"))),  # array item cut short
        table_bytes(entry(b"k", b"b", b"\x01")) + b"\x00",  # trailing bytes
    ],
    ids=repr,
)
def test_truncated_or_trailing_tables_raise_502(codec, data):
    with pytest.raises(ProtocolError) as raised:
        codec.decode_table(data)

    assert raised.value.reply_code == 502


@pytest.mark.parametrize("kind", [b"\x00", b"Z", b"c", b"U", b"\xff", b"N"], ids=repr)
def test_unknown_field_type_raises_502(codec, kind):
    with pytest.raises(ProtocolError) as raised:
        codec.decode_table(table_bytes(entry(b"k", kind, b"\x00" * 8)))

    assert raised.value.reply_code == 502


@pytest.mark.parametrize("seconds", [2**64 - 1, 2**63, 10**17])
def test_timestamp_out_of_range_raises_502(codec, seconds):
    with pytest.raises(ProtocolError) as raised:
        codec.decode_table(table_bytes(entry(b"k", b"T", struct.pack(">Q", seconds))))

    assert raised.value.reply_code == 502


def _seconds_sent(codec, value: object) -> int:
    encoded = codec.encode_table({"t": value})
    assert encoded[-9:-8] == b"T"
    return int(struct.unpack(">Q", encoded[-8:])[0])


TIMESTAMP_EDGES = [
    datetime.datetime(1970, 1, 1),
    datetime.datetime(1970, 1, 1, 0, 0, 0, 999999),  # microseconds are dropped
    datetime.datetime(1999, 12, 31, 23, 59, 59),
    datetime.datetime(2000, 2, 29, 12),  # a leap day of a century divisible by 400
    datetime.datetime(2100, 3, 1),  # 2100 is not a leap year
    datetime.datetime(2106, 2, 7, 6, 28, 15),  # 0xFFFFFFFF
    datetime.datetime(2106, 2, 7, 6, 28, 16),  # past 32 bits
    datetime.datetime(2515, 1, 1, 0, 0, 0, 999999),  # timestamp()'s float rounds this one up
    datetime.datetime(9999, 12, 31, 23, 59, 59),
]


@pytest.mark.parametrize("value", TIMESTAMP_EDGES, ids=str)
@pytest.mark.parametrize(
    "tzinfo", [None, UTC, datetime.timezone(datetime.timedelta(hours=2))], ids=repr
)
def test_timestamps_encode_as_whole_seconds_since_the_epoch(codec, value, tzinfo):
    value = value.replace(tzinfo=tzinfo)
    expected = int(value.replace(tzinfo=tzinfo or UTC).timestamp())  # naive: taken as UTC

    if expected < 0:  # before the epoch in UTC
        with pytest.raises(EncodeError):
            codec.encode_table({"t": value})
    else:
        assert _seconds_sent(codec, value) == expected


@given(st.datetimes(min_value=datetime.datetime(1970, 1, 1)), st.sampled_from([None, UTC]))
def test_any_datetime_encodes_as_its_timestamp(codec, value, tzinfo):
    value = value.replace(tzinfo=tzinfo)

    assert _seconds_sent(codec, value) == int(value.replace(tzinfo=UTC).timestamp())


@pytest.mark.parametrize(
    "value", [datetime.datetime(1969, 12, 31, 23, 59, 59), datetime.datetime(1, 1, 1)], ids=str
)
def test_timestamps_before_1970_do_not_encode(codec, value):
    with pytest.raises(EncodeError):
        codec.encode_table({"t": value})


def test_a_fraction_of_a_second_before_1970_encodes_as_zero(codec):
    # int(timestamp()) rounds towards zero, as before the fast path
    assert _seconds_sent(codec, datetime.datetime(1969, 12, 31, 23, 59, 59, 500000)) == 0


@given(st.integers(0, 0xFFFFFFFF))
def test_timestamps_decode_as_fromtimestamp_gives(codec, seconds):
    decoded = codec.decode_table(table_bytes(entry(b"k", b"T", struct.pack(">Q", seconds))))

    assert decoded["k"] == datetime.datetime.fromtimestamp(seconds, UTC)
    assert decoded["k"].tzinfo is UTC
