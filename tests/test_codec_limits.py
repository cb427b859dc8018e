"""What a broken or hostile peer can make the reader hold: bounded by what it sent.

Three limits: a body's memory follows the bytes received, not the size its
content header announces; ``max_message_size`` refuses a header announcing
more (506, :class:`MessageTooLarge`); ``channels`` refuses frames on a
channel that is not open (504, :class:`ChannelNotOpenError`).
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from codec_strategies import (
    DELIVER_ARGS,
    HEARTBEAT,
    body_frame,
    describe,
    examples,
    feed_bytewise,
    feed_in_pieces,
    frame,
    header_frame,
    method_frame,
    mutated,
    streams,
)
from hypothesis import given
from hypothesis import strategies as st

from amqpfast import _spec
from amqpfast.exceptions import (
    AMQPConnectionError,
    ChannelNotOpenError,
    MessageTooLarge,
    ProtocolError,
)


def deliver(channel: int = 1) -> bytes:
    return method_frame(channel, 60, 60, DELIVER_ARGS)


def message(channel: int, *pieces: bytes, size: int | None = None) -> bytes:
    """Basic.Deliver, a header announcing ``size`` (default: the pieces' total), body frames."""
    announced = sum(map(len, pieces)) if size is None else size
    return (
        deliver(channel)
        + header_frame(channel, announced)
        + b"".join(body_frame(channel, piece) for piece in pieces)
    )


ACK = method_frame(1, 60, 80, struct.pack(">QB", 1, 0))


def hostile_stream(channels: int, announced: int) -> bytes:
    """On each channel a message announcing ``announced`` bytes, with 1 byte of it sent."""
    return b"".join(message(n, b"x", size=announced) for n in range(1, channels + 1))


def traced_peak(feed: object, data: bytes) -> int:
    """The peak of Python-allocated memory while ``feed(data)`` runs."""
    tracemalloc.start()
    try:
        feed(data)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ------------------------------------------------------------ memory


@pytest.mark.parametrize(
    ("max_message_size", "announced"),
    [(_spec.MAX_MESSAGE_SIZE_DEFAULT, 64 * 2**20), (0, 2**62)],
    ids=["default-limit", "no-limit"],
)
def test_small_hostile_input_cannot_reserve_large_memory(codec, max_message_size, announced):
    # 300 channels x (method + header + 1 body byte): about 18 kB of input.
    # Each header announces a body of 64 MiB (or 4 EiB without a limit); a
    # reader that reserved even 1 MiB a message would take 300 MiB here.
    data = hostile_stream(300, announced)
    reader = codec.FrameReader(max_message_size=max_message_size)

    peak = traced_peak(reader.feed, data)

    assert len(data) < 20_000
    assert peak < 2 * 2**20, f"{peak} bytes held for {len(data)} bytes of input"


def test_body_memory_follows_the_bytes_received(codec):
    # A header announcing 64 MiB, then 64 KiB of body in 4 KiB frames: the
    # reader holds about what came (at most twice, while it grows).
    piece = b"z" * 4096
    data = deliver() + header_frame(1, 64 * 2**20) + body_frame(1, piece) * 16
    reader = codec.FrameReader()

    peak = traced_peak(reader.feed, data)

    assert peak < 3 * 65536, f"{peak} bytes held for 64 KiB of body"


@pytest.mark.parametrize(
    "pieces",
    [
        [b"a" * 5000],
        [b"a" * 3000, b"b" * 3000, b"c" * 7],
        [b"", b"a" * 100, b"", b"b" * 9000, b"c"],
        [b"x"] * 50,
        [b"p" * 4088, b"q" * 4088, b"r" * 4088, b"s" * 1],
    ],
    ids=["one-frame", "three-frames", "empty-frames", "many-small", "full-frames"],
)
def test_bodies_in_pieces_come_out_whole(codec, pieces):
    # Growing by what arrives must give the same body however it is cut.
    data = message(1, *pieces) + ACK
    expected = b"".join(pieces)

    for events in (
        codec.FrameReader(frame_max=16384).feed(data),
        feed_in_pieces(codec.FrameReader(frame_max=16384), data, range(0, len(data), 1000)),
        feed_in_pieces(codec.FrameReader(frame_max=16384), data, range(0, len(data), 7)),
        feed_bytewise(codec.FrameReader(frame_max=16384), data),
    ):
        [content, ack] = events
        assert type(content.body) is bytes
        assert content.body == expected
        assert ack.method.delivery_tag == 1


# ------------------------------------------------------------ max_message_size


def test_default_max_message_size_is_rabbitmqs(codec):
    assert codec.FrameReader().max_message_size == 128 * 2**20 == _spec.MAX_MESSAGE_SIZE_DEFAULT


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_header_announcing_more_than_the_limit_raises_506(codec, split):
    data = message(1, b"x" * 1001)
    reader = codec.FrameReader(max_message_size=1000)

    with pytest.raises(MessageTooLarge) as raised:
        feed_bytewise(reader, data) if split else reader.feed(data)

    error = raised.value
    assert isinstance(error, ProtocolError) and isinstance(error, AMQPConnectionError)
    assert error.reply_code == 506
    assert error.reply_text.startswith("RESOURCE_ERROR - ")
    assert str(error) == "506 message of 1001 bytes on channel 1 exceeds max_message_size 1000"


@pytest.mark.parametrize("split", [False, True], ids=["whole", "byte-by-byte"])
def test_message_of_exactly_the_limit_passes(codec, split):
    data = message(1, b"x" * 600, b"y" * 400)
    reader = codec.FrameReader(max_message_size=1000)

    [event] = feed_bytewise(reader, data) if split else reader.feed(data)

    assert event.body == b"x" * 600 + b"y" * 400


def test_limit_of_zero_means_none(codec):
    reader = codec.FrameReader(max_message_size=0)

    assert reader.feed(deliver() + header_frame(1, 2**64 - 1) + body_frame(1, b"abc")) == []
    assert reader.max_message_size == 0


def test_limit_can_change_between_reads(codec):
    reader = codec.FrameReader(max_message_size=10)
    reader.max_message_size = 20

    [event] = reader.feed(message(1, b"x" * 20))

    assert event.body == b"x" * 20


@pytest.mark.parametrize("value", [-1, 2**64, 1.5, True, "10", None])
def test_bad_max_message_size_is_refused(codec, value):
    with pytest.raises(ValueError, match="max_message_size"):
        codec.FrameReader(max_message_size=value)
    reader = codec.FrameReader()
    with pytest.raises(ValueError, match="max_message_size"):
        reader.max_message_size = value


# ------------------------------------------------------------ channels


@pytest.mark.parametrize(
    "data",
    [
        deliver(2),
        method_frame(2, 20, 41),  # Channel.CloseOk
        header_frame(2, 3),
        body_frame(2, b"abc"),
        ACK + method_frame(3, 60, 80, struct.pack(">QB", 1, 0)),
    ],
    ids=["content-method", "channel-method", "header", "body", "after-an-open-one"],
)
def test_frame_on_a_channel_not_open_raises_504(codec, data):
    reader = codec.FrameReader(channels={1})

    with pytest.raises(ChannelNotOpenError) as raised:
        reader.feed(data)

    error = raised.value
    assert isinstance(error, ProtocolError) and isinstance(error, AMQPConnectionError)
    assert error.reply_code == 504
    assert error.reply_text.startswith("CHANNEL_ERROR - ")
    assert "which is not open" in str(error)


def test_open_channels_channel_zero_and_heartbeats_pass(codec):
    connection_close_ok = method_frame(0, 10, 51)
    data = HEARTBEAT + connection_close_ok + message(1, b"abc") + ACK + message(5, b"de")
    reader = codec.FrameReader(channels={1: "a channel", 5: "another"})

    events = reader.feed(data)

    assert [event.channel for event in events] == [0, 0, 1, 1, 5]


def test_without_channels_any_channel_passes(codec):
    reader = codec.FrameReader()

    assert reader.channels is None
    assert [event.channel for event in reader.feed(message(9, b"a") + message(700, b"b"))] == [
        9,
        700,
    ]


def test_channels_are_read_again_at_each_feed(codec):
    # the connection's dict: a channel closed between two reads is not open
    channels = {1: None}
    reader = codec.FrameReader(channels=channels)
    assert len(reader.feed(ACK)) == 1

    del channels[1]
    with pytest.raises(ChannelNotOpenError):
        reader.feed(ACK)


def test_channels_can_be_set_later(codec):
    reader = codec.FrameReader()
    assert len(reader.feed(ACK)) == 1

    reader.channels = ()
    with pytest.raises(ChannelNotOpenError):
        reader.feed(ACK)


def test_channel_error_byte_by_byte_is_the_same(codec):
    reader = codec.FrameReader(channels={1})

    with pytest.raises(ChannelNotOpenError) as raised:
        feed_bytewise(reader, message(1, b"ok") + message(2, b"no"))

    assert raised.value.reply_code == 504


# ------------------------------------------------------------ both codecs agree

HOSTILE = {
    "too large": (message(1, b"x" * 11), {"max_message_size": 10}),
    "too large in pieces": (message(1, b"x" * 6, b"y" * 5), {"max_message_size": 10}),
    "too large and bad properties": (
        deliver() + frame(2, 1, struct.pack(">HHQ", 60, 0, 11) + b"\x80\x00"),
        {"max_message_size": 10},
    ),
    "closed channel": (message(3, b"x"), {"channels": {1}}),
    "closed channel after good ones": (message(1, b"x") + ACK + ACK[:-8], {"channels": {2}}),
    "heartbeat on a closed channel": (frame(8, 3, b""), {"channels": {1}}),
    "body longer than announced": (message(1, b"abcd", size=3), {"channels": {1}}),
    "hostile stream": (hostile_stream(50, 2**40), {}),
}


@pytest.mark.parametrize(("data", "options"), HOSTILE.values(), ids=HOSTILE.keys())
def test_both_codecs_fail_alike(compiled_and_python, data, options):
    outcomes = []
    for codec in compiled_and_python:
        reader = codec.FrameReader(**options)
        try:
            events = reader.feed(data)
        except ProtocolError as error:
            outcomes.append((type(error), error.reply_code, error.message))
        else:
            outcomes.append(("events", len(events), reader.buffered))

    compiled, python = outcomes
    assert compiled == python


def limited_outcome(codec, data: bytes, cuts: list[int], options: dict) -> tuple:
    reader = codec.FrameReader(**options)
    try:
        events = feed_in_pieces(reader, data, cuts)
    except ProtocolError as error:
        return ("error", type(error).__name__, error.reply_code, error.message)
    return ("events", [describe(event) for event in events], reader.buffered)


@examples(100)
@given(
    data=st.data(),
    cuts=st.lists(st.integers(0, 20_000), max_size=8),
    max_message_size=st.sampled_from([0, 1, 100, 4096, 10_000]),
    channels=st.one_of(st.none(), st.frozensets(st.integers(0, 3))),
)
def test_same_outcome_with_limits(compiled_and_python, data, cuts, max_message_size, channels):
    # the streams use channels 0-3 and bodies up to 12 kB: every limit is hit somewhere
    compiled, python = compiled_and_python
    stream = data.draw(streams(python))
    if data.draw(st.booleans()):
        stream = data.draw(mutated(stream))
    options = {"frame_max": 4096, "max_message_size": max_message_size, "channels": channels}

    expected = limited_outcome(python, stream, cuts, options)

    assert limited_outcome(compiled, stream, cuts, options) == expected
