"""The selector, and the compiled codec against its pure-Python twin on the same input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from codec_strategies import (
    CONTENT_INDEXES,
    FIELD_TABLES,
    SIMPLE_METHODS,
    describe,
    examples,
    feed_in_pieces,
    hot_arguments,
    joined,
    methods,
    mutated,
    no_extensions,
    payload_mutated,
    properties,
    random_frames,
    streams,
    typed,
)
from hypothesis import given
from hypothesis import strategies as st

import amqpfast.codec
from amqpfast import _codec_py
from amqpfast.exceptions import EncodeError, ProtocolError

SELECTOR_SCRIPT = (
    "import amqpfast.codec as c, amqpfast._codec_py as py;"
    "print(c.IMPLEMENTATION, c.FrameReader is py.FrameReader, c.encode_table is py.encode_table)"
)


def run_selector(value: str | None) -> list[str]:
    env = dict(os.environ)
    env.pop("AMQPFAST_NO_EXTENSIONS", None)
    if value is not None:
        env["AMQPFAST_NO_EXTENSIONS"] = value
    result = subprocess.run(
        [sys.executable, "-c", SELECTOR_SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.split()


# ------------------------------------------------------------ the selector


def test_selector_uses_the_compiled_codec_unless_told_not_to():
    expected = "python" if no_extensions() else "c"

    active = amqpfast.codec.IMPLEMENTATION
    assert active == expected
    assert (amqpfast.codec.FrameReader is _codec_py.FrameReader) == (expected == "python")


@pytest.mark.parametrize("value", ["1", "yes"])
def test_no_extensions_env_selects_the_twin(value):
    assert run_selector(value) == ["python", "True", "True"]


@pytest.mark.parametrize("value", [None, "", "0"])
def test_selector_picks_compiled_by_default(value):
    if no_extensions():
        pytest.skip("the pure-Python run need not have the compiled codec built")

    assert run_selector(value) == ["c", "False", "False"]


def test_fixture_gives_the_implementation_it_names(codec, request):
    name = codec.IMPLEMENTATION
    assert name == request.node.callspec.params["codec"]


def test_compiled_codec_has_every_public_name_of_the_twin(compiled_and_python):
    compiled, python = compiled_and_python

    missing = [name for name in python.__all__ if not hasattr(compiled, name)]

    assert missing == []
    assert compiled.IMPLEMENTATION == "c"


# ------------------------------------------------------------ same input, same output


def outcome(codec, data: bytes, cuts=(), frame_max: int = 4096):
    """What a reader makes of ``data``: its events, or the reply code it failed with."""
    reader = codec.FrameReader(frame_max=frame_max)
    try:
        events = feed_in_pieces(reader, data, cuts)
    except ProtocolError as error:
        return ("error", error.reply_code)
    return ("events", [describe(event) for event in events], reader.buffered)


CUTS = st.lists(st.integers(0, 20_000), max_size=8)


@examples(80)
@given(data=st.data(), cuts=CUTS)
def test_same_events_for_valid_streams(compiled_and_python, data, cuts):
    compiled, python = compiled_and_python
    stream = data.draw(streams(python))

    assert outcome(compiled, stream, cuts) == outcome(python, stream, cuts)


@examples(150)
@given(data=st.data(), cuts=CUTS)
def test_same_outcome_for_mutated_streams(compiled_and_python, data, cuts):
    compiled, python = compiled_and_python
    stream = data.draw(streams(python))
    damaged = data.draw(st.one_of(mutated(stream), payload_mutated(stream)))

    assert outcome(compiled, damaged, cuts) == outcome(python, damaged, cuts)


@examples(100)
@given(frames=st.lists(random_frames(), min_size=1, max_size=6))
def test_same_outcome_for_random_frames(compiled_and_python, frames):
    compiled, python = compiled_and_python
    data = b"".join(frames)

    assert outcome(compiled, data) == outcome(python, data)


CHANNELS = st.integers(0, 0xFFFF)
TAGS = st.integers(0, 2**64 - 1)

# Writer calls as plain data, so that both implementations get the same ones.
WRITER_CALLS = st.one_of(
    st.tuples(st.just("method"), CHANNELS, st.sampled_from(SIMPLE_METHODS).flatmap(methods)),
    st.tuples(
        st.just("content"),
        CHANNELS,
        st.sampled_from(sorted(CONTENT_INDEXES)).flatmap(hot_arguments),
        st.binary(max_size=10_000),
        properties(dict),
    ),
    # bodies on both sides of the zero-copy limit
    st.tuples(st.just("publish"), CHANNELS, st.binary(max_size=80_000), st.text(max_size=20)),
    st.tuples(st.sampled_from(["ack", "nack", "reject"]), CHANNELS, TAGS, st.booleans()),
    st.tuples(st.just("heartbeat")),
    # impossible values: both must refuse them alike
    st.tuples(st.just("ack"), st.integers(-5, 2**17), st.integers(-5, 2**65), st.booleans()),
)


def call(codec, writer, operation) -> str:
    name, *args = operation
    try:
        if name == "method":
            writer.method(*args)
        elif name == "content":
            channel, (cls, kwargs), body, props = args
            method = getattr(codec, cls)(**kwargs)
            writer.content(channel, method, body, codec.BasicProperties(**props))
        elif name == "publish":
            writer.publish(*args)
        elif name == "heartbeat":
            writer.heartbeat()
        else:
            getattr(writer, name)(*args)
    except EncodeError:
        return "EncodeError"
    return "ok"


@examples(80)
@given(
    operations=st.lists(WRITER_CALLS, min_size=1, max_size=6),
    frame_max=st.sampled_from([4096, 131072]),
)
def test_same_bytes_from_both_writers(compiled_and_python, operations, frame_max):
    compiled, python = compiled_and_python
    ours = compiled.FrameWriter(frame_max)
    twin = python.FrameWriter(frame_max)

    for operation in operations:
        assert call(compiled, ours, operation) == call(python, twin, operation)

    assert len(ours) == len(twin)
    assert joined(ours.take()) == joined(twin.take())


@examples(150)
@given(table=FIELD_TABLES)
def test_same_table_bytes(compiled_and_python, table):
    compiled, python = compiled_and_python

    encoded = python.encode_table(table)

    assert compiled.encode_table(table) == encoded
    assert typed(compiled.decode_table(encoded)) == typed(python.decode_table(encoded))


@examples(150)
@given(data=st.data())
def test_same_outcome_for_damaged_tables(compiled_and_python, data):
    compiled, python = compiled_and_python
    damaged = data.draw(mutated(python.encode_table(data.draw(FIELD_TABLES))))

    def result(codec):
        try:
            return typed(codec.decode_table(damaged))
        except ProtocolError as error:
            return error.reply_code

    assert result(compiled) == result(python)
