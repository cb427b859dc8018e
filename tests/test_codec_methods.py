"""Methods and content properties: hypothesis round trips through writer and reader."""

from __future__ import annotations

import datetime
import struct

import pytest
from codec_strategies import (
    CONTENT_INDEXES,
    HOT_NAMES,
    SIMPLE_METHODS,
    UTC,
    all_properties,
    build_method,
    examples,
    header_frame,
    hot_methods,
    joined,
    method_fields,
    method_frame,
    methods,
    properties,
    properties_fields,
    shortstr,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands

from amqpfast import _spec


def round_trip_method(codec, channel, method):
    writer = codec.FrameWriter(frame_max=0)
    writer.method(channel, method)
    [event] = codec.FrameReader(frame_max=0).feed(joined(writer.take()))
    assert type(event) is codec.MethodFrame
    assert event.channel == channel
    return event.method


def round_trip_content(codec, channel, method, body, props=None):
    writer = codec.FrameWriter(frame_max=0)
    writer.content(channel, method, body, props)
    [event] = codec.FrameReader(frame_max=0).feed(joined(writer.take()))
    assert type(event) is codec.ContentMessage
    assert event.channel == channel
    return event


def hot_class(codec, index):
    return next(getattr(codec, n) for n in HOT_NAMES if getattr(codec, n).index == index)


@pytest.mark.parametrize(
    "index", SIMPLE_METHODS, ids=[_spec.METHODS[i][0].name for i in SIMPLE_METHODS]
)
@examples(15)
@given(data=st.data(), channel=st.integers(0, 0xFFFF))
def test_every_method_round_trips(codec, index, data, channel):
    method = data.draw(methods(index))

    decoded = round_trip_method(codec, channel, method)

    if index in (_spec.BASIC_ACK, _spec.BASIC_REJECT, _spec.BASIC_NACK):
        assert type(decoded) is hot_class(codec, index)
    else:
        assert type(decoded) is _spec.METHODS[index][0]  # the pamqp class
    assert method_fields(decoded) == method_fields(method)


@pytest.mark.parametrize("index", sorted(CONTENT_INDEXES), ids=lambda i: _spec.METHODS[i][0].name)
@examples(30)
@given(data=st.data(), channel=st.integers(0, 0xFFFF), body=st.binary(max_size=300))
def test_every_content_method_round_trips(codec, index, data, channel, body):
    method = data.draw(hot_methods(codec, index))

    message = round_trip_content(codec, channel, method, body)

    assert type(message.method) is type(method)
    assert message.method == method
    assert message.body == body


@pytest.mark.parametrize("name", ["BasicAck", "BasicReject", "BasicNack"])
@examples(30)
@given(data=st.data(), channel=st.integers(0, 0xFFFF))
def test_hot_acks_round_trip(codec, name, data, channel):
    method = data.draw(hot_methods(codec, getattr(codec, name).index))

    assert round_trip_method(codec, channel, method) == method


@pytest.mark.parametrize("index", sorted(CONTENT_INDEXES), ids=lambda i: _spec.METHODS[i][0].name)
def test_pamqp_content_method_decodes_as_hot_class(codec, index):
    # content() takes pamqp's own command objects too; they arrive as our hot classes.
    cls, fields = _spec.METHODS[index]
    values = {name: 0 if kind != _spec.SHORTSTR else "x" for name, kind in fields}
    values.update({name: True for name, kind in fields if kind == _spec.BIT})
    method = build_method(cls, values)

    message = round_trip_content(codec, 1, method, b"body")

    assert type(message.method) is hot_class(codec, index)
    assert method_fields(message.method) == method_fields(method, skip=["ticket"])


HOT_LAYOUT = {
    "BasicPublish": ("exchange", "routing_key", "mandatory", "immediate"),
    "BasicReturn": ("reply_code", "reply_text", "exchange", "routing_key"),
    "BasicDeliver": ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key"),
    "BasicGetOk": ("delivery_tag", "redelivered", "exchange", "routing_key", "message_count"),
    "BasicAck": ("delivery_tag", "multiple"),
    "BasicReject": ("delivery_tag", "requeue"),
    "BasicNack": ("delivery_tag", "multiple", "requeue"),
}


@pytest.mark.parametrize("name", HOT_NAMES)
def test_hot_class_name_index_and_field_order(codec, name):
    cls = getattr(codec, name)
    pamqp_cls = getattr(commands.Basic, name[len("Basic") :])

    assert cls.name == pamqp_cls.name
    assert cls.index == pamqp_cls.index
    assert [key for key, _ in cls()] == list(HOT_LAYOUT[name])


def test_hot_class_equality_and_iteration(codec):
    deliver = codec.BasicDeliver("ctag", 42, True, "ex", "rk")

    assert deliver == codec.BasicDeliver("ctag", 42, True, "ex", "rk")
    assert deliver != codec.BasicDeliver("ctag", 43, True, "ex", "rk")
    assert codec.BasicAck(1, False) != codec.BasicNack(1, False)
    assert dict(deliver) == {
        "consumer_tag": "ctag",
        "delivery_tag": 42,
        "redelivered": True,
        "exchange": "ex",
        "routing_key": "rk",
    }
    assert deliver.delivery_tag == 42
    assert codec.BasicNack(3, requeue=False).requeue is False


def test_decoded_bits_are_bools(codec):
    ack = round_trip_method(codec, 1, codec.BasicNack(1, True, False))

    assert ack.multiple is True
    assert ack.requeue is False


def test_bits_pack_into_one_octet_in_wire_order(codec):
    # Queue.Declare: ticket, queue, then passive durable exclusive auto_delete nowait.
    method = commands.Queue.Declare(queue="q", durable=True, auto_delete=True)
    writer = codec.FrameWriter()

    writer.method(1, method)

    expected = method_frame(1, 50, 10, b"\x00\x00" + shortstr(b"q") + b"\x0a" + b"\0\0\0\0")
    assert joined(writer.take()) == expected


def test_non_hot_methods_decode_to_pamqp_classes(codec):
    stream = method_frame(0, 10, 30, struct.pack(">HIH", 2047, 131072, 60))

    [event] = codec.FrameReader().feed(stream)

    assert isinstance(event.method, commands.Connection.Tune)
    assert dict(event.method) == {"channel_max": 2047, "frame_max": 131072, "heartbeat": 60}


def test_longstr_that_is_not_utf8_decodes_as_bytes(codec):
    secure = build_method(commands.Connection.Secure, {"challenge": b"\xff\xfe\x00"})

    decoded = round_trip_method(codec, 0, secure)

    assert decoded.challenge == b"\xff\xfe\x00"


def test_shortstr_that_is_not_utf8_survives_a_round_trip(codec):
    arguments = shortstr(b"tag-\xff") + struct.pack(">QB", 1, 0) + shortstr(b"") + shortstr(b"")
    stream = method_frame(1, 60, 60, arguments) + header_frame(1, 0)
    [message] = codec.FrameReader().feed(stream)
    writer = codec.FrameWriter()

    writer.content(1, message.method, b"")

    assert joined(writer.take()) == stream


# ------------------------------------------------------------ properties


@examples(60)
@given(data=st.data())
def test_all_fourteen_properties_round_trip(codec, data):
    props = data.draw(all_properties(codec.BasicProperties))

    message = round_trip_content(codec, 1, codec.BasicDeliver(), b"", props)

    assert properties_fields(message.properties) == properties_fields(props)
    assert message.properties == props


@examples(60)
@given(data=st.data())
def test_any_subset_of_properties_round_trips(codec, data):
    props = data.draw(properties(codec.BasicProperties))

    message = round_trip_content(codec, 1, codec.BasicGetOk(), b"x", props)

    assert message.properties == props


def test_properties_are_iterable_in_wire_order(codec):
    props = codec.BasicProperties(message_type="t", cluster_id="c", priority=3)

    assert [name for name, _ in props] == list(_spec.PROPERTY_NAMES)
    assert dict(props)["message_type"] == "t"
    assert dict(props)["cluster_id"] == "c"
    assert props == codec.BasicProperties(priority=3, cluster_id="c", message_type="t")
    assert props != codec.BasicProperties(priority=3, cluster_id="c")


def test_no_properties_means_all_absent(codec):
    message = round_trip_content(codec, 1, codec.BasicDeliver(), b"")

    assert all(value is None for _, value in message.properties)


def test_empty_string_property_is_sent_as_absent(codec):
    writer = codec.FrameWriter()
    writer.content(1, codec.BasicDeliver(), b"", codec.BasicProperties(content_type=""))
    stream = joined(writer.take())

    assert stream.endswith(header_frame(1, 0, b"\x00\x00"))
    [message] = codec.FrameReader().feed(stream)
    assert message.properties.content_type is None


def test_property_flags_and_layout(codec):
    props = codec.BasicProperties(
        content_type="a", delivery_mode=2, timestamp=datetime.datetime(2020, 1, 1, tzinfo=UTC)
    )
    writer = codec.FrameWriter()

    writer.content(1, codec.BasicDeliver(), b"", props)

    flags = 0x8000 | 0x1000 | 0x0040
    encoded = struct.pack(">H", flags) + shortstr(b"a") + b"\x02" + struct.pack(">Q", 1577836800)
    assert joined(writer.take()).endswith(header_frame(1, 0, encoded))


def test_naive_timestamp_is_taken_as_utc(codec):
    props = codec.BasicProperties(timestamp=datetime.datetime(2021, 5, 6, 7, 8, 9))

    message = round_trip_content(codec, 1, codec.BasicDeliver(), b"", props)

    assert message.properties.timestamp == datetime.datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert message.properties.timestamp.utcoffset() == datetime.timedelta(0)


def test_aware_timestamp_keeps_its_instant(codec):
    plus_two = datetime.timezone(datetime.timedelta(hours=2))
    props = codec.BasicProperties(timestamp=datetime.datetime(2021, 5, 6, 9, 8, 9, tzinfo=plus_two))

    message = round_trip_content(codec, 1, codec.BasicDeliver(), b"", props)

    assert message.properties.timestamp == datetime.datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_timestamp_drops_fractions_of_a_second(codec):
    stamp = datetime.datetime(2021, 5, 6, 7, 8, 9, 999999, tzinfo=UTC)

    message = round_trip_content(
        codec, 1, codec.BasicDeliver(), b"", codec.BasicProperties(timestamp=stamp)
    )

    assert message.properties.timestamp == stamp.replace(microsecond=0)


def test_timestamp_above_32_bits_is_read_as_milliseconds(codec):
    millis = 1_700_000_000_123
    stream = method_frame(1, 60, 60, b"\x00" + struct.pack(">QB", 1, 0) + b"\x00\x00")
    stream += header_frame(1, 0, struct.pack(">HQ", 0x0040, millis))

    [message] = codec.FrameReader().feed(stream)

    assert message.properties.timestamp == datetime.datetime.fromtimestamp(millis / 1000, UTC)


def test_properties_with_continuation_flag_word(codec):
    # Bit 0 says another flags word follows; AMQP 0-9-1 defines none of its bits.
    encoded = struct.pack(">HH", 0x8001, 0) + shortstr(b"text/plain")
    stream = method_frame(1, 60, 60, b"\x00" + struct.pack(">QB", 1, 0) + b"\x00\x00")
    stream += header_frame(1, 0, encoded)

    [message] = codec.FrameReader().feed(stream)

    assert message.properties == codec.BasicProperties(content_type="text/plain")


def test_properties_copy_is_equal_and_independent(codec):
    original = codec.BasicProperties(content_type="a/b", headers={"k": 1}, priority=3)

    clone = original.copy()
    clone.content_type = "c/d"

    assert original.content_type == "a/b"
    assert clone == codec.BasicProperties(content_type="c/d", headers={"k": 1}, priority=3)
    assert clone.headers is original.headers  # shallow
