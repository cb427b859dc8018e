"""Malformed input: every one raises ProtocolError with the right reply code."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from codec_strategies import (
    DELIVER_ARGS,
    HEARTBEAT,
    IMPLEMENTATIONS,
    body_frame,
    frame,
    header_frame,
    method_frame,
    shortstr,
    table_bytes,
)

from amqpfast._codec_py import MAX_DEPTH
from amqpfast.exceptions import ProtocolError

DELIVER = method_frame(1, 60, 60, DELIVER_ARGS)
ACK = method_frame(1, 60, 80, struct.pack(">QB", 1, 0))


def deliver_with_properties(properties: bytes, body_size: int = 0) -> bytes:
    return DELIVER + header_frame(1, body_size, properties)


def connection_start(server_properties: bytes) -> bytes:
    """Connection.Start: the first method a broker sends, with a field table in it."""
    arguments = b"\x00\x09" + server_properties + longstr_bytes(b"PLAIN") + longstr_bytes(b"en_US")
    return method_frame(0, 10, 10, arguments)


def longstr_bytes(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


MALFORMED = {
    # framing: 501
    "bad frame end": (frame(1, 1, ACK[7:-1], end=0x00), 501),
    "frame end is the next frame's type": (ACK[:-1] + ACK, 501),
    "frame type 0": (frame(0, 1, b""), 501),
    "frame type 4": (frame(4, 1, b"abc"), 501),
    "frame type 9": (frame(9, 0, b""), 501),
    "frame type 255": (frame(255, 0, b""), 501),
    "protocol header after the first frame": (HEARTBEAT + b"AMQP\x00\x00\x09\x01", 501),
    "malformed protocol header": (b"AMQX\x00\x00\x09\x01", 501),
    "body longer than announced": (DELIVER + header_frame(1, 3) + body_frame(1, b"abcd"), 501),
    "second body frame past the size": (
        DELIVER + header_frame(1, 3) + body_frame(1, b"ab") + body_frame(1, b"cd"),
        501,
    ),
    "heartbeat on channel 1": (frame(8, 1, b""), 501),
    "heartbeat with payload": (frame(8, 0, b"\x00"), 501),
    "method frame shorter than its id": (frame(1, 1, b"\x00\x3c"), 501),
    "content header frame too short": (DELIVER + frame(2, 1, b"\x00\x3c\x00\x00"), 501),
    # frames out of order: 505
    "body without method": (body_frame(1, b"abc"), 505),
    "body before its header": (DELIVER + body_frame(1, b"abc"), 505),
    "body on another channel": (DELIVER + header_frame(1, 3) + body_frame(2, b"abc"), 505),
    "body after the message is complete": (
        DELIVER + header_frame(1, 1) + body_frame(1, b"a") + body_frame(1, b""),
        505,
    ),
    "header without method": (header_frame(1, 0), 505),
    "header after a non-content method": (ACK + header_frame(1, 0), 505),
    "second header": (DELIVER + header_frame(1, 5) + header_frame(1, 5), 505),
    "method while header is due": (DELIVER + ACK, 505),
    "method while body is due": (DELIVER + header_frame(1, 5) + ACK, 505),
    "content method while body is due": (DELIVER + header_frame(1, 5) + DELIVER, 505),
    "content header of another class": (
        DELIVER + frame(2, 1, struct.pack(">HHQH", 50, 0, 0, 0)),
        505,
    ),
    # unknown methods: 540
    "unknown method of class basic": (method_frame(1, 60, 999), 540),
    "unknown class": (method_frame(1, 999, 10), 540),
    "class 0 method 0": (method_frame(1, 0, 0), 540),
    # syntax: 502
    "method arguments cut short": (method_frame(1, 60, 80, b"\x00\x00\x00"), 502),
    "method bits missing": (method_frame(1, 60, 80, b"\x00" * 8), 502),
    "trailing bytes after method": (method_frame(1, 60, 80, b"\x00" * 9 + b"\x00"), 502),
    "shortstr beyond the frame": (method_frame(1, 60, 21, b"\x05ab"), 502),
    "longstr beyond the frame": (method_frame(0, 10, 20, b"\x00\x00\x01\x00abc"), 502),
    "table length beyond the frame": (connection_start(b"\x00\x00\x10\x00"), 502),
    "table value cut short": (connection_start(table_bytes(shortstr(b"k") + b"I\x00")), 502),
    "bad field type": (connection_start(table_bytes(shortstr(b"k") + b"?")), 502),
    "timestamp out of range in table": (
        connection_start(table_bytes(shortstr(b"k") + b"T" + b"\xff" * 8)),
        502,
    ),
    "content header without property flags": (
        DELIVER + frame(2, 1, struct.pack(">HHQ", 60, 0, 0)),
        501,
    ),
    "property value missing": (deliver_with_properties(b"\x80\x00"), 502),
    "property shortstr cut short": (deliver_with_properties(b"\x80\x00\x05ab"), 502),
    "trailing bytes after properties": (deliver_with_properties(b"\x00\x00\x00"), 502),
    "headers table cut short": (deliver_with_properties(b"\x20\x00\x00\x00\x00\x09"), 502),
    "bad field type in headers": (
        deliver_with_properties(b"\x20\x00" + table_bytes(shortstr(b"k") + b"\x01")),
        502,
    ),
    "timestamp property out of range": (
        deliver_with_properties(b"\x00\x40" + b"\xff" * 8),
        502,
    ),
    "continuation flags word missing": (deliver_with_properties(b"\x00\x01"), 502),
}


@pytest.mark.parametrize(("data", "reply_code"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_raises_protocol_error(codec, data, reply_code):
    reader = codec.FrameReader()

    with pytest.raises(ProtocolError) as raised:
        reader.feed(data)

    assert raised.value.reply_code == reply_code


@pytest.mark.parametrize(("data", "reply_code"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_fed_byte_by_byte_raises_the_same(codec, data, reply_code):
    reader = codec.FrameReader()

    with pytest.raises(ProtocolError) as raised:
        for i in range(len(data)):
            reader.feed(data[i : i + 1])

    assert raised.value.reply_code == reply_code


@pytest.mark.parametrize(("data", "reply_code"), MALFORMED.values(), ids=MALFORMED.keys())
def test_reader_refuses_input_after_an_error(codec, data, reply_code):
    reader = codec.FrameReader()
    with pytest.raises(ProtocolError):
        reader.feed(data)

    for more in (HEARTBEAT, b"", ACK):
        with pytest.raises(ProtocolError) as raised:
            reader.feed(more)
        assert raised.value.reply_code == reply_code


def test_oversized_frame_fails_on_its_header_alone(codec):
    reader = codec.FrameReader(frame_max=4096)

    with pytest.raises(ProtocolError) as raised:
        reader.feed(struct.pack(">BHI", 3, 1, 4096 - 7))  # one byte over: no payload yet

    assert raised.value.reply_code == 501


def test_frame_of_frame_max_waits_for_its_payload(codec):
    reader = codec.FrameReader(frame_max=4096)

    assert reader.feed(DELIVER + header_frame(1, 5000) + struct.pack(">BHI", 3, 1, 4088)) == []
    assert reader.buffered == 7


@pytest.mark.parametrize("size", [2**31, 2**32 - 1])
def test_huge_frame_size_fails_before_allocating(codec, size):
    reader = codec.FrameReader()

    with pytest.raises(ProtocolError) as raised:
        reader.feed(struct.pack(">BHI", 3, 1, size))

    assert raised.value.reply_code == 501


def test_oversized_frame_in_the_middle_of_a_chunk(codec):
    reader = codec.FrameReader(frame_max=4096)

    with pytest.raises(ProtocolError) as raised:
        reader.feed(HEARTBEAT + struct.pack(">BHI", 1, 1, 5000) + b"\x00" * 100)

    assert raised.value.reply_code == 501


def test_protocol_error_has_reply_text(codec):
    with pytest.raises(ProtocolError) as raised:
        codec.FrameReader().feed(frame(8, 3, b""))

    assert raised.value.reply_text.startswith("FRAME_ERROR - ")
    assert len(raised.value.reply_text) <= 255


def nested_arrays(depth: int) -> bytes:
    """A table holding ``depth`` arrays, each the only item of the one around it."""
    # Level i from the outside holds the remaining levels, 5 bytes each.
    value = b"".join(b"A" + struct.pack(">I", 5 * (depth - 1 - i)) for i in range(depth))
    return table_bytes(shortstr(b"k") + value)


def test_nesting_up_to_the_limit_decodes(codec):
    decoded = codec.decode_table(nested_arrays(MAX_DEPTH))

    depth = 0
    value = decoded["k"]
    while value:
        [value] = value
        depth += 1
    assert depth == MAX_DEPTH - 1  # the innermost array is empty


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 2000])
def test_nesting_past_the_limit_raises_502(codec, depth):
    # 2000 levels take 10 kB, well inside one frame: a hostile peer must not
    # exhaust the stack (RecursionError, or a crash in C).
    data = nested_arrays(depth)

    with pytest.raises(ProtocolError) as raised:
        codec.decode_table(data)
    assert raised.value.reply_code == 502

    with pytest.raises(ProtocolError) as raised:
        codec.FrameReader().feed(connection_start(data))
    assert raised.value.reply_code == 502


FRAME_DEEP_NESTING = """
import importlib, struct, sys
codec = importlib.import_module(sys.argv[1])
from amqpfast.exceptions import ProtocolError
depth = (131072 - 100) // 5
value = b"".join(b"A" + struct.pack(">I", 5 * (depth - 1 - i)) for i in range(depth))
table = b"\\x01k" + value
args = b"\\x00\\x09" + struct.pack(">I", len(table)) + table + b"\\x00" * 8
payload = struct.pack(">HH", 10, 10) + args
data = struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\\xce"
try:
    codec.FrameReader().feed(data)
except ProtocolError as error:
    print(error.reply_code)
"""


def test_deepest_nesting_one_frame_holds_raises_502(codec):
    # 26000 levels: a compiled decoder that recurses without a limit would
    # overflow the C stack, so this runs in a child process.
    result = subprocess.run(
        [sys.executable, "-c", FRAME_DEEP_NESTING, IMPLEMENTATIONS[codec.IMPLEMENTATION]],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "502"
