"""FrameWriter: exact bytes, frame splitting, buffering, and EncodeError."""

from __future__ import annotations

import array
import struct

import pytest
from codec_strategies import (
    body_frame,
    examples,
    frame,
    header_frame,
    joined,
    method_frame,
    shortstr,
    split_frames,
)
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands

from amqpfast.exceptions import EncodeError

PUBLISH_ARGS = b"\x00\x00" + shortstr(b"ex") + shortstr(b"rk") + b"\x00"


def test_protocol_header_and_heartbeat_bytes(codec):
    writer = codec.FrameWriter()

    writer.protocol_header()
    writer.heartbeat()

    assert joined(writer.take()) == b"AMQP\x00\x00\x09\x01" + b"\x08\x00\x00\x00\x00\x00\x00\xce"


def test_ack_nack_reject_bytes(codec):
    writer = codec.FrameWriter()

    writer.ack(1, 2**64 - 1, multiple=True)
    writer.nack(2, 5, multiple=True, requeue=False)
    writer.nack(2, 6)
    writer.reject(3, 7, requeue=False)
    writer.reject(3, 8)

    assert joined(writer.take()) == (
        method_frame(1, 60, 80, struct.pack(">QB", 2**64 - 1, 1))
        + method_frame(2, 60, 120, struct.pack(">QB", 5, 1))
        + method_frame(2, 60, 120, struct.pack(">QB", 6, 2))  # requeue defaults to True
        + method_frame(3, 60, 90, struct.pack(">QB", 7, 0))
        + method_frame(3, 60, 90, struct.pack(">QB", 8, 1))
    )


def test_publish_bytes(codec):
    writer = codec.FrameWriter()

    writer.publish(5, b"hello", "ex", "rk", codec.BasicProperties(delivery_mode=2))

    assert joined(writer.take()) == (
        method_frame(5, 60, 40, PUBLISH_ARGS)
        + header_frame(5, 5, b"\x10\x00\x02")
        + body_frame(5, b"hello")
    )


def test_publish_flags(codec):
    writer = codec.FrameWriter()

    writer.publish(1, b"", mandatory=True, immediate=True)

    args = b"\x00\x00" + shortstr(b"") + shortstr(b"") + b"\x03"
    assert joined(writer.take()) == method_frame(1, 60, 40, args) + header_frame(1, 0)


def test_publish_equals_content_with_basic_publish(codec):
    props = codec.BasicProperties(content_type="application/json", headers={"x": [1, 2]})
    one = codec.FrameWriter()
    two = codec.FrameWriter()

    one.publish(7, b"{}", "ex", "rk", props, mandatory=True)
    two.content(7, codec.BasicPublish("ex", "rk", mandatory=True), b"{}", props)

    assert joined(one.take()) == joined(two.take())


def test_empty_body_has_no_body_frame(codec):
    writer = codec.FrameWriter()

    writer.publish(1, b"")

    assert len(split_frames(joined(writer.take()))) == 2


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
@pytest.mark.parametrize("size", [10, 100_000])
def test_body_may_be_any_bytes_like(codec, wrap, size):
    body = bytes(range(256)) * (size // 256) + b"t" * (size % 256)
    writer = codec.FrameWriter()

    writer.publish(1, wrap(body))

    [message] = codec.FrameReader().feed(joined(writer.take()))
    assert message.body == body


def test_body_from_a_sliced_memoryview(codec):
    data = bytes(range(256)) * 400
    writer = codec.FrameWriter()

    writer.publish(1, memoryview(data)[100:90_000])

    [message] = codec.FrameReader().feed(joined(writer.take()))
    assert message.body == data[100:90_000]


def test_body_from_strided_and_typed_memoryviews(codec):
    writer = codec.FrameWriter()

    writer.publish(1, memoryview(b"abcdef")[::2])  # not contiguous
    writer.publish(1, memoryview(array.array("H", [1, 2])))  # items of two bytes

    events = codec.FrameReader().feed(joined(writer.take()))
    assert [e.body for e in events] == [b"ace", array.array("H", [1, 2]).tobytes()]


@pytest.mark.parametrize("frame_max", [4096, 5000, 131072])
@pytest.mark.parametrize("size", [0, 1, 4087, 4088, 4089, 100_000, 300_000])
def test_body_is_split_at_frame_max(codec, frame_max, size):
    body = b"\xab" * size
    writer = codec.FrameWriter(frame_max=frame_max)

    writer.publish(1, body)

    stream = joined(writer.take())
    bodies = [f for f in split_frames(stream) if f[0] == 3]
    chunk = frame_max - 8
    assert [len(f) - 8 for f in bodies] == [min(chunk, size - i) for i in range(0, size, chunk)]
    assert all(len(f) <= frame_max for f in split_frames(stream))
    assert b"".join(f[7:-1] for f in bodies) == body


def test_frame_max_change_applies_to_the_next_publish(codec):
    writer = codec.FrameWriter(frame_max=131072)
    writer.publish(1, b"a" * 10_000)
    writer.frame_max = 4096
    writer.publish(1, b"b" * 10_000)

    frames = split_frames(joined(writer.take()))

    assert [len(f) - 8 for f in frames if f[0] == 3] == [10_000, 4088, 4088, 1824]


def test_large_body_goes_out_as_memoryview_of_the_body(codec):
    body = b"\x01" * 300 * 1024
    writer = codec.FrameWriter()

    writer.publish(1, body)

    pieces = writer.take()
    views = [piece for piece in pieces if isinstance(piece, memoryview)]
    assert views, "a large bytes body should not be copied"
    assert all(view.obj is body for view in views)
    assert sum(len(view) for view in views) == len(body)


def test_small_writes_accumulate_in_one_buffer(codec):
    writer = codec.FrameWriter()
    expected = b""
    for tag in range(1, 101):
        writer.publish(1, b"m%d" % tag, "ex", "rk")
        writer.ack(2, tag)
        expected += method_frame(1, 60, 40, PUBLISH_ARGS) + header_frame(1, len(b"m%d" % tag))
        expected += body_frame(1, b"m%d" % tag)
        expected += method_frame(2, 60, 80, struct.pack(">QB", tag, 0))

    assert len(writer) == len(expected)
    pieces = writer.take()
    assert len(pieces) == 1
    assert joined(pieces) == expected


def test_take_empties_the_writer(codec):
    writer = codec.FrameWriter()
    assert len(writer) == 0
    assert writer.take() == []

    writer.heartbeat()
    writer.take()

    assert len(writer) == 0
    assert joined(writer.take()) == b""


def test_len_counts_zero_copy_pieces(codec):
    writer = codec.FrameWriter()
    writer.ack(1, 1)
    writer.publish(1, b"z" * 200_000)
    writer.ack(1, 2)

    size = len(writer)

    assert size == len(joined(writer.take()))
    assert size > 200_000


@examples(50)
@given(
    operations=st.lists(
        st.tuples(st.sampled_from(["ack", "publish", "heartbeat"]), st.binary(max_size=9000)),
        max_size=12,
    ),
    frame_max=st.sampled_from([4096, 131072]),
)
def test_len_always_matches_what_take_returns(codec, operations, frame_max):
    writer = codec.FrameWriter(frame_max=frame_max)
    for operation, body in operations:
        if operation == "ack":
            writer.ack(1, len(body))
        elif operation == "publish":
            writer.publish(1, body * 10)  # up to 90 kB: both copy and zero-copy paths
        else:
            writer.heartbeat()

    size = len(writer)
    stream = joined(writer.take())

    assert size == len(stream)
    publishes = sum(1 for operation, _ in operations if operation == "publish")
    events = codec.FrameReader(frame_max=frame_max).feed(stream)
    assert sum(1 for event in events if type(event) is codec.ContentMessage) == publishes


@pytest.mark.parametrize(
    "method",
    [
        lambda codec: codec.BasicPublish(),
        lambda codec: codec.BasicDeliver(),
        lambda codec: codec.BasicReturn(),
        lambda codec: codec.BasicGetOk(),
        lambda codec: commands.Basic.Publish(),
        lambda codec: commands.Basic.Deliver(),
    ],
    ids=["Publish", "Deliver", "Return", "GetOk", "pamqp Publish", "pamqp Deliver"],
)
def test_method_refuses_content_methods(codec, method):
    writer = codec.FrameWriter()

    with pytest.raises(EncodeError):
        writer.method(1, method(codec))

    assert len(writer) == 0


def test_content_refuses_methods_without_content(codec):
    writer = codec.FrameWriter()

    with pytest.raises(EncodeError):
        writer.content(1, codec.BasicAck(1), b"")
    with pytest.raises(EncodeError):
        writer.content(1, commands.Queue.Declare(), b"")
    assert len(writer) == 0


def test_method_refuses_what_is_not_a_method(codec):
    writer = codec.FrameWriter()

    with pytest.raises(EncodeError):
        writer.method(1, object())


def test_content_refuses_what_is_not_a_method(codec):
    writer = codec.FrameWriter()

    with pytest.raises(EncodeError):
        writer.content(1, object(), b"")


# A dict of properties would otherwise be dropped silently.
def test_properties_of_the_wrong_type_raise(codec):
    writer = codec.FrameWriter()

    with pytest.raises(EncodeError, match="properties"):
        writer.publish(1, b"", properties={"content_type": "text/plain"})


# (description, call, what the message must name)
IMPOSSIBLE = {
    "exchange over 255 bytes": (lambda c, w: w.publish(1, b"", exchange="e" * 256), "exchange"),
    "routing key over 255 bytes": (
        lambda c, w: w.publish(1, b"", routing_key="r" * 256),
        "routing_key",
    ),
    "multi-byte routing key over 255 bytes": (
        lambda c, w: w.publish(1, b"", routing_key="é" * 128),
        "routing_key",
    ),
    "exchange not a str": (lambda c, w: w.publish(1, b"", exchange=5), "exchange"),
    "shortstr of a pamqp method": (
        lambda c, w: w.method(1, commands.Queue.Declare(queue="q" * 256)),
        "queue",
    ),
    "consumer tag over 255 bytes": (
        lambda c, w: w.content(1, c.BasicDeliver("t" * 256), b""),
        "consumer_tag",
    ),
    "table key over 255 bytes": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(headers={"k" * 256: 1})),
        "headers",
    ),
    "table key in method arguments": (
        lambda c, w: w.method(1, commands.Queue.Declare(queue="q", arguments={"k" * 256: 1})),
        "arguments",
    ),
    "shortstr property over 255 bytes": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(message_id="m" * 256)),
        "message_id",
    ),
    "channel 70000": (lambda c, w: w.ack(70000, 1), "channel"),
    "channel -1": (lambda c, w: w.publish(-1, b""), "channel"),
    "channel of method()": (lambda c, w: w.method(65536, c.BasicAck(1)), "channel"),
    "delivery tag -1": (lambda c, w: w.ack(1, -1), "delivery_tag"),
    "delivery tag 2**64": (lambda c, w: w.nack(1, 2**64), "delivery_tag"),
    "delivery tag of reject": (lambda c, w: w.reject(1, 2**64), "delivery_tag"),
    "delivery tag not an int": (lambda c, w: w.ack(1, "1"), "delivery_tag"),
    "priority 300": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(priority=300)),
        "priority",
    ),
    "delivery mode -1": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(delivery_mode=-1)),
        "delivery_mode",
    ),
    "short argument too big": (
        lambda c, w: w.method(0, commands.Connection.TuneOk(channel_max=70000)),
        "channel_max",
    ),
    "long argument negative": (
        lambda c, w: w.method(0, commands.Basic.Qos(prefetch_size=-1)),
        "prefetch_size",
    ),
    "body a str": (lambda c, w: w.publish(1, "text"), "body"),
    "body None": (lambda c, w: w.publish(1, None), "body"),
    "headers not a dict": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(headers=[("a", 1)])),
        "headers",
    ),
    "unencodable header value": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(headers={"x": object()})),
        "headers",
    ),
    "header value too big": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(headers={"x": 2**64})),
        "headers",
    ),
    "unencodable argument value": (
        lambda c, w: w.method(1, commands.Queue.Declare(queue="q", arguments={"x": {1, 2}})),
        "arguments",
    ),
    "content type not a str": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(content_type=1)),
        "content_type",
    ),
    "timestamp not a datetime": (
        lambda c, w: w.publish(1, b"", properties=c.BasicProperties(timestamp="now")),
        "timestamp",
    ),
    "string with a lone surrogate": (
        lambda c, w: w.publish(1, b"", routing_key="\ud800"),
        "routing_key",
    ),
}


@pytest.mark.parametrize(("call", "field"), IMPOSSIBLE.values(), ids=IMPOSSIBLE.keys())
def test_impossible_value_raises_encode_error_naming_the_field(codec, call, field):
    writer = codec.FrameWriter()

    with pytest.raises(EncodeError, match=field):
        call(codec, writer)


@pytest.mark.parametrize(("call", "field"), IMPOSSIBLE.values(), ids=IMPOSSIBLE.keys())
def test_failed_call_leaves_pending_output_unchanged(codec, call, field):
    writer = codec.FrameWriter()
    writer.ack(1, 1)
    writer.publish(1, b"x" * 70_000)  # a zero-copy piece is pending too
    writer.heartbeat()
    before = len(writer)
    reference = codec.FrameWriter()
    reference.ack(1, 1)
    reference.publish(1, b"x" * 70_000)
    reference.heartbeat()

    with pytest.raises(EncodeError):
        call(codec, writer)

    assert len(writer) == before
    assert joined(writer.take()) == joined(reference.take())


def test_writer_works_on_after_an_error(codec):
    writer = codec.FrameWriter()
    with pytest.raises(EncodeError):
        writer.ack(70000, 1)

    writer.ack(1, 1)

    assert joined(writer.take()) == method_frame(1, 60, 80, struct.pack(">QB", 1, 0))


def test_method_frame_over_frame_max_raises(codec):
    writer = codec.FrameWriter(frame_max=4096)
    writer.heartbeat()
    method = commands.Queue.Declare(queue="q", arguments={"x-big": "a" * 5000})

    with pytest.raises(EncodeError):
        writer.method(1, method)

    assert joined(writer.take()) == frame(8, 0, b"")


def test_header_frame_over_frame_max_raises(codec):
    writer = codec.FrameWriter(frame_max=4096)
    writer.heartbeat()
    props = codec.BasicProperties(headers={"big": b"\x00" * 5000})

    with pytest.raises(EncodeError):
        writer.publish(1, b"body", properties=props)

    assert joined(writer.take()) == frame(8, 0, b"")


def test_frame_of_exactly_frame_max_is_written(codec):
    writer = codec.FrameWriter(frame_max=4096)
    # Connection.Secure: 4 bytes of method id and a longstr with a 4-byte length.
    method = commands.Connection.Secure(challenge="c" * (4096 - 8 - 8))

    writer.method(0, method)

    assert len(writer) == 4096
    with pytest.raises(EncodeError):
        writer.method(0, commands.Connection.Secure(challenge="c" * (4096 - 8 - 7)))


def test_same_frame_fits_without_limit(codec):
    writer = codec.FrameWriter(frame_max=0)

    writer.method(1, commands.Queue.Declare(queue="q", arguments={"x-big": "a" * 200_000}))

    assert len(writer) > 200_000
