"""FrameReader: framing, feeding in pieces, message assembly, frame_max."""

from __future__ import annotations

import struct

import pytest
from codec_strategies import (
    DELIVER_ARGS,
    HEARTBEAT,
    body_frame,
    describe,
    examples,
    feed_bytewise,
    feed_in_pieces,
    header_frame,
    joined,
    method_frame,
    split_frames,
    streams,
)
from hypothesis import given
from hypothesis import strategies as st

from amqpfast import _spec
from amqpfast.exceptions import ProtocolError


def deliver_stream(codec, body: bytes, channel: int = 1, frame_max: int = 131072) -> bytes:
    writer = codec.FrameWriter(frame_max=frame_max)
    writer.content(channel, codec.BasicDeliver("ctag", 1, False, "ex", "rk"), body)
    return joined(writer.take())


# A stream with every event kind; the message body spans three frames.
def sample_stream(codec) -> bytes:
    writer = codec.FrameWriter(frame_max=4096)
    writer.protocol_header()
    writer.heartbeat()
    writer.method(0, codec.BasicAck(5, True))
    writer.content(
        2,
        codec.BasicDeliver("ctag", 9, True, "ex", "rk"),
        bytes(range(256)) * 40,
        codec.BasicProperties(content_type="text/plain", headers={"a": 1}),
    )
    writer.content(3, codec.BasicReturn(312, "NO_ROUTE", "ex", "rk"), b"")
    writer.heartbeat()
    return joined(writer.take())


def test_sample_stream_gives_every_event(codec):
    events = codec.FrameReader().feed(sample_stream(codec))

    assert [type(event).__name__ for event in events] == [
        "ProtocolHeader",
        "Heartbeat",
        "MethodFrame",
        "ContentMessage",
        "ContentMessage",
        "Heartbeat",
    ]
    header, heartbeat, ack, message, returned, _ = events
    assert (header.major, header.minor, header.revision) == (0, 9, 1)
    assert heartbeat.channel == 0
    assert (ack.channel, ack.method) == (0, codec.BasicAck(5, True))
    assert message.channel == 2
    assert message.method == codec.BasicDeliver("ctag", 9, True, "ex", "rk")
    assert message.properties == codec.BasicProperties(content_type="text/plain", headers={"a": 1})
    assert message.body == bytes(range(256)) * 40
    assert (returned.channel, returned.body) == (3, b"")
    assert returned.method == codec.BasicReturn(312, "NO_ROUTE", "ex", "rk")


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_feed_takes_any_bytes_like(codec, wrap):
    stream = sample_stream(codec)
    expected = [describe(e) for e in codec.FrameReader().feed(stream)]

    events = codec.FrameReader().feed(wrap(stream))

    assert [describe(e) for e in events] == expected


def test_feed_whole_or_byte_by_byte_is_the_same(codec):
    stream = sample_stream(codec)
    whole = [describe(e) for e in codec.FrameReader().feed(stream)]

    assert [describe(e) for e in feed_bytewise(codec.FrameReader(), stream)] == whole


def test_trailing_partial_frame_stays_buffered(codec):
    stream = sample_stream(codec)
    next_frame = method_frame(5, 60, 80, struct.pack(">QB", 77, 0))
    whole = [describe(e) for e in codec.FrameReader().feed(stream)]
    reader = codec.FrameReader()

    events = reader.feed(stream + next_frame[:10])

    assert [describe(e) for e in events] == whole
    assert reader.buffered == 10
    [ack] = reader.feed(next_frame[10:])
    assert (ack.channel, ack.method) == (5, codec.BasicAck(77, False))
    assert reader.buffered == 0


def test_partial_frame_header_is_buffered_without_events(codec):
    reader = codec.FrameReader()

    assert reader.feed(HEARTBEAT[:6]) == []
    assert reader.buffered == 6
    assert [type(e).__name__ for e in reader.feed(HEARTBEAT[6:])] == ["Heartbeat"]


@examples(40)
@given(data=st.data(), cuts=st.lists(st.integers(0, 40000), max_size=12))
def test_random_chunking_gives_the_same_events(codec, data, cuts):
    stream = data.draw(streams(codec))
    whole = [describe(e) for e in codec.FrameReader(frame_max=4096).feed(stream)]

    chunked = feed_in_pieces(codec.FrameReader(frame_max=4096), stream, cuts)

    assert [describe(e) for e in chunked] == whole


def test_body_split_over_many_frames_is_one_bytes_object(codec):
    body = bytes(range(256)) * 100  # 25600 bytes: 7 body frames of at most 4088
    stream = deliver_stream(codec, body, frame_max=4096)
    assert len(split_frames(stream)) == 2 + 7

    [message] = codec.FrameReader(frame_max=4096).feed(stream)

    assert type(message.body) is bytes
    assert message.body == body


def test_interleaved_channels_assemble_separately(codec):
    one = split_frames(deliver_stream(codec, b"1" * 10000, channel=1, frame_max=4096))
    two = split_frames(deliver_stream(codec, b"2" * 9000, channel=2, frame_max=4096))
    assert len(one) == len(two) == 5  # method, header, three body frames
    interleaved = b"".join(a + b for a, b in zip(one, two, strict=True))

    events = codec.FrameReader(frame_max=4096).feed(interleaved)

    assert [(e.channel, e.body) for e in events] == [(1, b"1" * 10000), (2, b"2" * 9000)]


def test_method_frames_on_other_channels_pass_while_content_is_due(codec):
    stream = (
        method_frame(1, 60, 60, DELIVER_ARGS)
        + method_frame(2, 60, 80, struct.pack(">QB", 3, 1))
        + header_frame(1, 3)
        + HEARTBEAT
        + body_frame(1, b"abc")
    )

    events = codec.FrameReader().feed(stream)

    assert [type(e).__name__ for e in events] == ["MethodFrame", "Heartbeat", "ContentMessage"]
    assert events[0].method == codec.BasicAck(3, True)
    assert (events[2].channel, events[2].body) == (1, b"abc")


def test_zero_length_body_needs_no_body_frame(codec):
    stream = method_frame(1, 60, 60, DELIVER_ARGS) + header_frame(1, 0)

    [message] = codec.FrameReader().feed(stream)

    assert message.body == b""
    assert type(message.body) is bytes
    assert message.method == codec.BasicDeliver("ctag", 7, False, "", "rk")
    assert message.properties == codec.BasicProperties()


def test_empty_body_frames_in_between_are_allowed(codec):
    stream = (
        method_frame(1, 60, 60, DELIVER_ARGS)
        + header_frame(1, 4)
        + body_frame(1, b"ab")
        + body_frame(1, b"")
        + body_frame(1, b"cd")
    )

    [message] = codec.FrameReader().feed(stream)

    assert message.body == b"abcd"


def test_large_body_round_trips_through_zero_copy_pieces(codec):
    body = bytes(range(251)) * 1224  # about 300 KiB, not a multiple of the frame size
    writer = codec.FrameWriter()
    writer.publish(1, body, "ex", "rk", codec.BasicProperties(delivery_mode=2))

    pieces = writer.take()

    assert any(isinstance(piece, memoryview) for piece in pieces)
    [message] = codec.FrameReader().feed(joined(pieces))
    assert message.body == body
    assert message.method == codec.BasicPublish("ex", "rk")
    assert message.properties == codec.BasicProperties(delivery_mode=2)


def test_protocol_header_event_at_stream_start(codec):
    reader = codec.FrameReader()

    assert reader.feed(b"AMQP\x00\x00\x09") == []  # 7 of its 8 bytes
    header, heartbeat = reader.feed(b"\x01" + HEARTBEAT)

    assert type(header) is codec.ProtocolHeader
    assert (header.major, header.minor, header.revision, header.channel) == (0, 9, 1, 0)
    assert type(heartbeat) is codec.Heartbeat


def test_protocol_header_with_another_version(codec):
    [header] = codec.FrameReader().feed(b"AMQP\x01\x01\x00\x0a")

    assert (header.major, header.minor, header.revision) == (1, 0, 10)


def test_frame_of_exactly_frame_max_is_accepted(codec):
    body = b"x" * (4096 - 8)
    stream = method_frame(1, 60, 60, DELIVER_ARGS) + header_frame(1, len(body))
    stream += body_frame(1, body)

    [message] = codec.FrameReader(frame_max=4096).feed(stream)

    assert message.body == body


def test_frame_max_zero_means_no_limit(codec):
    body = b"y" * 300_000
    writer = codec.FrameWriter(frame_max=0)
    writer.content(1, codec.BasicDeliver("c", 1), body)
    stream = joined(writer.take())
    assert len(split_frames(stream)) == 3  # the whole body in one frame

    reader = codec.FrameReader(frame_max=0)

    assert reader.frame_max == 0
    assert [e.body for e in reader.feed(stream)] == [body]


@pytest.mark.parametrize("value", [0, 4096, 131072, 2**32 - 2])
def test_frame_max_accepts_zero_and_4096_to_2_32(codec, value):
    reader = codec.FrameReader(frame_max=value)
    writer = codec.FrameWriter(frame_max=value)

    assert reader.frame_max == writer.frame_max == value
    reader.frame_max = 8192
    writer.frame_max = 8192
    assert reader.frame_max == writer.frame_max == 8192


@pytest.mark.parametrize("value", [-1, 1, 4095, 2**32, 2**64])
def test_frame_max_refuses_other_values(codec, value):
    with pytest.raises(ValueError):
        codec.FrameReader(frame_max=value)
    with pytest.raises(ValueError):
        codec.FrameWriter(frame_max=value)
    reader = codec.FrameReader()
    writer = codec.FrameWriter()
    with pytest.raises(ValueError):
        reader.frame_max = value
    with pytest.raises(ValueError):
        writer.frame_max = value
    assert reader.frame_max == writer.frame_max == _spec.FRAME_MAX_DEFAULT


def test_frame_max_2_32_minus_1_is_accepted_and_limits_nothing(codec):
    # It reads back as 0 in the twin: both mean "any frame the size field can express".
    reader = codec.FrameReader(frame_max=2**32 - 1)
    codec.FrameWriter(frame_max=2**32 - 1)

    # the header of the largest frame there can be: waits for its payload
    assert reader.feed(struct.pack(">BHI", 3, 1, 2**32 - 9)) == []
    assert reader.buffered == 7


def test_default_frame_max(codec):
    assert codec.FrameReader().frame_max == _spec.FRAME_MAX_DEFAULT
    assert codec.FrameWriter().frame_max == _spec.FRAME_MAX_DEFAULT


def test_lowering_frame_max_applies_to_the_next_frame(codec):
    big = method_frame(1, 60, 60, DELIVER_ARGS) + header_frame(1, 5000)
    big += body_frame(1, b"z" * 5000)
    reader = codec.FrameReader(frame_max=8192)
    assert len(reader.feed(big)) == 1

    reader.frame_max = 4096

    with pytest.raises(ProtocolError) as raised:
        reader.feed(big)
    assert raised.value.reply_code == 501
