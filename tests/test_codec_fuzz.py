"""Hostile input: whatever bytes arrive, only ProtocolError may come out of the codec."""

from __future__ import annotations

import struct

from codec_strategies import (
    FIELD_TABLES,
    examples,
    feed_in_pieces,
    mutated,
    payload_mutated,
    random_frames,
    streams,
)
from hypothesis import given
from hypothesis import strategies as st

from amqpfast.exceptions import ProtocolError

EVENT_TYPES = {"MethodFrame", "ContentMessage", "Heartbeat", "ProtocolHeader"}
CUTS = st.lists(st.integers(0, 20_000), max_size=10)


def check_stream(codec, data: bytes, cuts: list[int], frame_max: int = 4096) -> None:
    """Feed ``data``; it either gives events or raises ProtocolError, never anything else."""
    reader = codec.FrameReader(frame_max=frame_max)
    try:
        events = feed_in_pieces(reader, data, cuts)
    except ProtocolError as error:
        # 506: a content header announcing more than max_message_size
        assert error.reply_code in (501, 502, 505, 506, 540)
        # and once broken, the reader stays broken
        try:
            reader.feed(b"\x08\x00\x00\x00\x00\x00\x00\xce")
        except ProtocolError as again:
            assert again.reply_code == error.reply_code
        else:
            raise AssertionError("the reader took input after a protocol error") from None
    else:
        assert {type(event).__name__ for event in events} <= EVENT_TYPES
        assert 0 <= reader.buffered <= len(data)


@examples(150)
@given(data=st.binary(max_size=400), cuts=CUTS)
def test_random_bytes(codec, data, cuts):
    check_stream(codec, data, cuts)


@examples(150)
@given(frames=st.lists(random_frames(), min_size=1, max_size=8), cuts=CUTS)
def test_random_frames(codec, frames, cuts):
    check_stream(codec, b"".join(frames), cuts)


@examples(150)
@given(data=st.data(), cuts=CUTS)
def test_mutated_valid_streams(codec, data, cuts):
    stream = data.draw(streams(codec))
    check_stream(codec, data.draw(mutated(stream)), cuts)


@examples(200)
@given(data=st.data(), cuts=CUTS)
def test_mutated_frame_payloads(codec, data, cuts):
    stream = data.draw(streams(codec))
    check_stream(codec, data.draw(payload_mutated(stream)), cuts)


@examples(60)
@given(data=st.data(), cuts=CUTS)
def test_mutated_streams_without_a_frame_limit(codec, data, cuts):
    # frame_max 0: a corrupted size field makes the reader wait, never allocate
    stream = data.draw(streams(codec))
    check_stream(codec, data.draw(mutated(stream)), cuts, frame_max=0)


@examples(150)
@given(data=st.binary(max_size=200))
def test_random_tables(codec, data):
    try:
        table = codec.decode_table(struct.pack(">I", len(data)) + data)
    except ProtocolError as error:
        assert error.reply_code == 502
    else:
        assert isinstance(table, dict)


@examples(150)
@given(data=st.data())
def test_mutated_tables(codec, data):
    encoded = codec.encode_table(data.draw(FIELD_TABLES))
    try:
        table = codec.decode_table(data.draw(mutated(encoded)))
    except ProtocolError as error:
        assert error.reply_code == 502
    else:
        assert isinstance(table, dict)
