"""Differential tests against pamqp, the reference encoder, in both directions.

pamqp quirks the strategies keep clear of (see codec_strategies.py):
longlong decoded signed (tags < 2**63), floats in tables sent as float32 'f',
only bytearray sent as 'x', names validated (pattern, 127 characters), table
keys cut at 128 bytes, '' properties sent as absent, and timestamps above
0xFFFFFFFF read as milliseconds (by both of us).
"""

from __future__ import annotations

import datetime
import warnings

import pytest
from codec_strategies import (
    BODIES,
    CONTENT_INDEXES,
    DECIMALS,
    FIELD_LEAVES,
    INT64,
    PAMQP_LONGLONG_MAX,
    PAMQP_TABLES,
    SIMPLE_METHODS,
    TEXT_CHARS,
    TIMESTAMPS,
    UTC,
    argument_values,
    build_method,
    containers,
    examples,
    hot_methods,
    joined,
    method_fields,
    pamqp_methods,
    properties,
    properties_fields,
    short_strings,
    typed,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import body as pamqp_body
from pamqp import commands, decode, encode
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header

from amqpfast import _spec

METHOD_IDS = [_spec.METHODS[i][0].name for i in SIMPLE_METHODS]
# Room for the largest generated content header; bodies still span several frames.
FRAME_MAX = 32768

# Tables our encoder writes and pamqp reads back to equal values: any float
# ('d' both ways), bytes ('x', pamqp gives a bytearray), tuples as arrays.
# Strings must be UTF-8 text: pamqp decodes shortstr keys strictly.
OURS_TO_PAMQP_TABLES = st.dictionaries(
    short_strings(255),
    containers(FIELD_LEAVES, st.text(TEXT_CHARS, max_size=20)),
    max_size=6,
)


def pamqp_unmarshal_all(data: bytes) -> list[tuple[int, object]]:
    """Every frame of a stream, as (channel, pamqp frame object)."""
    frames = []
    with warnings.catch_warnings():
        # unmarshalling Basic.RecoverAsync constructs it, and its __init__ warns
        warnings.simplefilter("ignore", DeprecationWarning)
        while data:
            consumed, channel, value = pamqp_frame.unmarshal(data)
            frames.append((channel, value))
            data = data[consumed:]
    return frames


def pamqp_content(channel, method, body, props, frame_max=FRAME_MAX):
    """Method, header and body frames the way pamqp marshals them."""
    data = pamqp_frame.marshal(method, channel)
    data += pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(body), props), channel)
    chunk = frame_max - 8
    for offset in range(0, len(body), chunk):
        piece = pamqp_body.ContentBody(body[offset : offset + chunk])
        data += pamqp_frame.marshal(piece, channel)
    return data


# ------------------------------------------------------------ ours -> pamqp


def ours_to_pamqp_methods(index):
    """Methods with any value pamqp decodes faithfully (signed longlong aside)."""
    cls, fields = _spec.METHODS[index]
    arguments = {
        name: argument_values(kind, OURS_TO_PAMQP_TABLES, PAMQP_LONGLONG_MAX)
        for name, kind in fields
    }
    return st.fixed_dictionaries(arguments).map(lambda values: build_method(cls, values))


@pytest.mark.parametrize("index", SIMPLE_METHODS, ids=METHOD_IDS)
@examples(10)
@given(data=st.data(), channel=st.integers(0, 0xFFFF))
def test_our_method_frames_decode_in_pamqp(codec, index, data, channel):
    method = data.draw(ours_to_pamqp_methods(index))
    writer = codec.FrameWriter(frame_max=0)
    writer.method(channel, method)

    [(decoded_channel, decoded)] = pamqp_unmarshal_all(joined(writer.take()))

    assert decoded_channel == channel
    assert type(decoded) is _spec.METHODS[index][0]
    assert method_fields(decoded) == method_fields(method)


@pytest.mark.parametrize("index", sorted(CONTENT_INDEXES), ids=lambda i: _spec.METHODS[i][0].name)
@examples(40)
@given(data=st.data(), channel=st.integers(0, 0xFFFF), body=BODIES)
def test_our_messages_decode_in_pamqp(codec, index, data, channel, body):
    method = data.draw(hot_methods(codec, index, longlong_max=PAMQP_LONGLONG_MAX))
    props = data.draw(properties(codec.BasicProperties, tables=OURS_TO_PAMQP_TABLES))
    writer = codec.FrameWriter(frame_max=FRAME_MAX)
    writer.content(channel, method, body, props)

    frames = pamqp_unmarshal_all(joined(writer.take()))

    assert {frame_channel for frame_channel, _ in frames} == {channel}
    (_, decoded_method), (_, content_header), *bodies = frames
    assert decoded_method.name == method.name
    assert method_fields(decoded_method, skip=["ticket"]) == method_fields(method)
    assert content_header.body_size == len(body)
    assert properties_fields(content_header.properties) == properties_fields(props)
    assert b"".join(piece.value for _, piece in bodies) == body


@examples(150)
@given(table=OURS_TO_PAMQP_TABLES)
def test_our_tables_decode_in_pamqp(codec, table):
    _, decoded = decode.field_table(codec.encode_table(table))

    assert typed(decoded, ordered=False) == typed(table, ordered=False)


def test_our_heartbeat_and_protocol_header_decode_in_pamqp(codec):
    writer = codec.FrameWriter()
    writer.protocol_header()
    writer.heartbeat()
    data = joined(writer.take())

    [(_, header), (channel, heartbeat)] = pamqp_unmarshal_all(data)

    assert isinstance(header, pamqp_header.ProtocolHeader)
    assert (header.major_version, header.minor_version, header.revision) == (0, 9, 1)
    assert channel == 0
    assert heartbeat.name == "Heartbeat"


# ------------------------------------------------------------ pamqp -> ours


@pytest.mark.parametrize("index", SIMPLE_METHODS, ids=METHOD_IDS)
@examples(10)
@given(data=st.data(), channel=st.integers(0, 0xFFFF))
def test_pamqp_method_frames_decode_in_ours(codec, index, data, channel):
    method = data.draw(pamqp_methods(index))

    [event] = codec.FrameReader(frame_max=0).feed(pamqp_frame.marshal(method, channel))

    assert type(event) is codec.MethodFrame
    assert event.channel == channel
    assert event.method.name == method.name
    assert method_fields(event.method) == method_fields(method)


@pytest.mark.parametrize("index", sorted(CONTENT_INDEXES), ids=lambda i: _spec.METHODS[i][0].name)
@examples(40)
@given(data=st.data(), channel=st.integers(0, 0xFFFF), body=BODIES)
def test_pamqp_messages_decode_in_ours(codec, index, data, channel, body):
    method = data.draw(pamqp_methods(index))
    props = data.draw(properties(commands.Basic.Properties, tables=PAMQP_TABLES, pamqp=True))
    stream = pamqp_content(channel, method, body, props)

    [message] = codec.FrameReader(frame_max=FRAME_MAX).feed(stream)

    assert type(message) is codec.ContentMessage
    assert message.channel == channel
    assert message.method.name == method.name
    assert method_fields(message.method) == method_fields(method, skip=["ticket"])
    assert properties_fields(message.properties) == properties_fields(props)
    assert message.body == body


@examples(150)
@given(table=PAMQP_TABLES)
def test_pamqp_tables_decode_in_ours(codec, table):
    decoded = codec.decode_table(encode.field_table(table))

    assert typed(decoded, ordered=False) == typed(table, ordered=False)


def sorted_table(value):
    """The same table with keys sorted at every level, as pamqp writes them."""
    if isinstance(value, dict):
        return {key: sorted_table(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_table(item) for item in value]
    return value


# Types both encoders choose the same way: integers by size, bool, text,
# None, timestamps, decimals, arrays and tables (floats and bytes differ).
SAME_CHOICE_TABLES = st.dictionaries(
    short_strings(128),
    containers(
        st.one_of(
            st.booleans(),
            INT64,
            st.text(TEXT_CHARS, max_size=30),
            st.none(),
            TIMESTAMPS,
            DECIMALS,
        ),
        short_strings(128),
    ),
    max_size=6,
)


@examples(150)
@given(table=SAME_CHOICE_TABLES)
def test_table_bytes_equal_pamqp_for_shared_types(codec, table):
    ordered = sorted_table(table)

    assert codec.encode_table(ordered) == encode.field_table(ordered)


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
        datetime.datetime(1970, 1, 1, tzinfo=UTC),
        datetime.datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC),  # 0xFFFFFFFF
    ],
)
def test_timestamp_property_matches_pamqp(codec, value):
    deliver = commands.Basic.Deliver("ctag", 1, False, "ex", "rk")
    stream = pamqp_content(1, deliver, b"", commands.Basic.Properties(timestamp=value))

    [message] = codec.FrameReader().feed(stream)

    assert message.properties.timestamp == value
    writer = codec.FrameWriter()
    props = codec.BasicProperties(timestamp=value)
    writer.content(1, codec.BasicDeliver("ctag", 1, False, "ex", "rk"), b"", props)
    assert joined(writer.take()) == stream


def test_names_pamqp_accepts_are_names_we_accept(codec):
    # The longest exchange name pamqp allows round-trips through us too.
    name = "a" * 127
    stream = pamqp_frame.marshal(commands.Exchange.Declare(exchange=name), 1)

    [event] = codec.FrameReader().feed(stream)

    assert event.method.exchange == name
