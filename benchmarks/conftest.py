"""Inputs, the three codecs under test, and the ratio table printed after a run.

The three implementations get the same inputs and are measured in one process,
so the ratios compare like with like on whatever machine runs them.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

N_MESSAGES = 1000
CHANNEL = 1
CONSUMER_TAG = "ctag1.abc"
EXCHANGE = "bench"
ROUTING_KEY = "bench.key"
CONTENT_TYPE = "application/octet-stream"
DELIVERY_MODE = 2
HEADERS = {"x-retry": 1}
BODY_SIZES = {"64B": 64, "16KiB": 16 * 1024}
# the most one socket read hands to asyncio's data_received (selector loop and uvloop)
READ_SIZE = 256 * 1024

IMPLEMENTATIONS = ("amqpfast-c", "amqpfast-py", "pamqp")

_FRAME_SIZE = struct.Struct(">I")
_HEAP_KEY = pytest.StashKey[str]()
_RESULTS_KEY = pytest.StashKey[dict[str, dict[str, "Result"]]]()


# --------------------------------------------------------- the allocator

# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _steady_heap() -> str:
    """Keep freed memory in the process, so each round reuses the last one's pages.

    A 16 KiB round allocates and frees about 16 MB. With glibc's defaults that
    memory goes back to the kernel or stays, depending on what else sits on the
    heap, and faulting it in again costs more than decoding it (measured: about
    4000 page faults and 10 ms a round). Which case a benchmark lands in changed
    from run to run and flipped the 16 KiB ratios; a long-running consumer
    reuses its heap, so the benchmarks do too. AMQPFAST_BENCH_MALLOC=default
    keeps glibc's own behaviour.
    """
    if os.environ.get("AMQPFAST_BENCH_MALLOC", "") == "default":
        return "glibc defaults (AMQPFAST_BENCH_MALLOC=default)"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return "allocator defaults (no glibc mallopt)"
    # 32 MB is the highest mmap threshold glibc accepts; the largest buffer
    # here (one 16.5 MB stream) stays below it
    if mallopt(_M_TRIM_THRESHOLD, 1 << 30) and mallopt(_M_MMAP_THRESHOLD, 32 << 20):
        return "glibc heap kept between rounds (mallopt trim 1 GiB, mmap 32 MiB)"
    return "glibc defaults (mallopt refused)"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_HEAP_KEY] = _steady_heap()


def pytest_report_header(config: pytest.Config) -> str:
    return f"amqpfast benchmarks: {config.stash.get(_HEAP_KEY, '?')}"


# ----------------------------------------------------------------- inputs


def make_bodies(size: int) -> list[bytes]:
    """N distinct bodies: each starts with its index so a mix-up is caught."""
    return [i.to_bytes(8, "big") + bytes((i % 251,)) * (size - 8) for i in range(N_MESSAGES)]


def pamqp_properties() -> commands.Basic.Properties:
    return commands.Basic.Properties(
        content_type=CONTENT_TYPE, delivery_mode=DELIVERY_MODE, headers=dict(HEADERS)
    )


def make_delivery_stream(bodies: list[bytes]) -> bytes:
    """What a broker sends a consumer on one channel, built by pamqp (not by us)."""
    props = pamqp_properties()
    frames = []
    for tag, body in enumerate(bodies, 1):
        deliver = commands.Basic.Deliver(
            consumer_tag=CONSUMER_TAG,
            delivery_tag=tag,
            redelivered=False,
            exchange=EXCHANGE,
            routing_key=ROUTING_KEY,
        )
        frames.append(frame.marshal(deliver, CHANNEL))
        frames.append(frame.marshal(ContentHeader(0, len(body), props), CHANNEL))
        frames.append(frame.marshal(ContentBody(body), CHANNEL))
    return b"".join(frames)


@pytest.fixture(scope="session", params=list(BODY_SIZES), ids=list(BODY_SIZES))
def body_size(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def bodies(body_size: str) -> list[bytes]:
    return make_bodies(BODY_SIZES[body_size])


@pytest.fixture(scope="session")
def delivery_stream(bodies: list[bytes]) -> bytes:
    return make_delivery_stream(bodies)


@pytest.fixture(scope="session")
def delivery_reads(delivery_stream: bytes) -> list[bytes]:
    """The same stream as the socket reads a transport would deliver it in."""
    return [
        delivery_stream[pos : pos + READ_SIZE] for pos in range(0, len(delivery_stream), READ_SIZE)
    ]


# -------------------------------------------------- the reference decoder


def pamqp_frames(stream: bytes) -> list[tuple[int, Any]]:
    """Split a byte stream the way aiormq does: one bytes copy per frame, then unmarshal."""
    unmarshal = frame.unmarshal
    frames = []
    pos = 0
    end = len(stream)
    while pos < end:
        stop = pos + 8 + _FRAME_SIZE.unpack_from(stream, pos + 3)[0]
        _, channel, value = unmarshal(stream[pos:stop])
        frames.append((channel, value))
        pos = stop
    return frames


def pamqp_decode(stream: bytes) -> list[tuple[Any, Any, bytes]]:
    """Deliveries as aiormq assembles them: one (method, header, body) per message."""
    unmarshal = frame.unmarshal
    unpack_size = _FRAME_SIZE.unpack_from
    messages = []
    method: Any = None
    header: Any = None
    chunks: list[bytes] = []
    left = 0
    pos = 0
    end = len(stream)
    while pos < end:
        stop = pos + 8 + unpack_size(stream, pos + 3)[0]
        _, _channel, value = unmarshal(stream[pos:stop])
        pos = stop
        if isinstance(value, ContentBody):
            chunks.append(value.value)
            left -= len(value.value)
            if left <= 0:
                messages.append((method, header, b"".join(chunks)))
        elif isinstance(value, ContentHeader):
            header = value
            chunks = []
            left = value.body_size
            if left == 0:
                messages.append((method, header, b""))
        else:
            method = value
    return messages


# ----------------------------------------------------- implementations


@dataclass(frozen=True)
class Codec:
    """One implementation's three benchmarked operations and how to read its output."""

    name: str
    decode: Callable[[bytes], list[Any]]
    # the stream in socket-read pieces; None: reads do not change this codec's work
    decode_reads: Callable[[list[bytes]], list[Any]] | None
    publish: Callable[[list[bytes]], Any]
    ack: Callable[[int], Any]
    # a decoded message as (delivery tag, consumer tag, exchange, routing key,
    # content type, delivery mode, headers, body), for the correctness checks
    view: Callable[[Any], tuple[Any, ...]]


def _amqpfast_codec(name: str, codec: Any) -> Codec:
    reader_class = codec.FrameReader
    writer_class = codec.FrameWriter
    props = codec.BasicProperties(
        content_type=CONTENT_TYPE, delivery_mode=DELIVERY_MODE, headers=dict(HEADERS)
    )

    def decode(stream: bytes) -> list[Any]:
        return reader_class().feed(stream)  # type: ignore[no-any-return]

    def decode_reads(reads: list[bytes]) -> list[Any]:
        reader = reader_class()
        feed = reader.feed
        events = []
        for data in reads:
            events += feed(data)
        return events

    def publish(bodies: list[bytes]) -> Any:
        writer = writer_class()
        send = writer.publish
        for body in bodies:
            send(CHANNEL, body, EXCHANGE, ROUTING_KEY, props, False, False)
        return writer.take()

    def ack(count: int) -> Any:
        writer = writer_class()
        send = writer.ack
        for tag in range(1, count + 1):
            send(CHANNEL, tag)
        return writer.take()

    def view(event: Any) -> tuple[Any, ...]:
        method, props = event.method, event.properties
        return (
            method.delivery_tag,
            method.consumer_tag,
            method.exchange,
            method.routing_key,
            props.content_type,
            props.delivery_mode,
            props.headers,
            event.body,
        )

    return Codec(name, decode, decode_reads, publish, ack, view)


def _pamqp_codec() -> Codec:
    props = pamqp_properties()
    marshal = frame.marshal
    publish_class = commands.Basic.Publish
    ack_class = commands.Basic.Ack

    def publish(bodies: list[bytes]) -> Any:
        # aiormq's basic_publish: method, header and body objects, marshalled
        # frame by frame and handed to the transport together.
        pieces = []
        append = pieces.append
        for body in bodies:
            append(marshal(publish_class(exchange=EXCHANGE, routing_key=ROUTING_KEY), CHANNEL))
            append(marshal(ContentHeader(0, len(body), props), CHANNEL))
            append(marshal(ContentBody(body), CHANNEL))
        return b"".join(pieces)

    def ack(count: int) -> Any:
        pieces = []
        append = pieces.append
        for tag in range(1, count + 1):
            append(marshal(ack_class(delivery_tag=tag), CHANNEL))
        return b"".join(pieces)

    def view(message: Any) -> tuple[Any, ...]:
        method, header, body = message
        props = header.properties
        return (
            method.delivery_tag,
            method.consumer_tag,
            method.exchange,
            method.routing_key,
            props.content_type,
            props.delivery_mode,
            props.headers,
            body,
        )

    # aiormq reads frame by frame whatever the socket hands over, so pamqp's
    # work is the same for one stream and for many reads
    return Codec("pamqp", pamqp_decode, None, publish, ack, view)


def _load_compiled() -> Any:
    try:
        module = importlib.import_module("amqpfast._codec")
    except ImportError as error:
        pytest.skip(
            f"compiled codec amqpfast._codec not importable ({error}); build it with "
            "`.venv/bin/python setup.py build_ext --inplace`"
        )
    if getattr(module, "IMPLEMENTATION", None) != "c":
        pytest.fail(f"amqpfast._codec says IMPLEMENTATION={module.IMPLEMENTATION!r}, not 'c'")
    return module


_CODECS: dict[str, Codec] = {}


@pytest.fixture(params=IMPLEMENTATIONS)
def codec(request: pytest.FixtureRequest) -> Codec:
    name = request.param
    if name not in _CODECS:
        if name == "amqpfast-c":
            _CODECS[name] = _amqpfast_codec(name, _load_compiled())
        elif name == "amqpfast-py":
            _CODECS[name] = _amqpfast_codec(name, importlib.import_module("amqpfast._codec_py"))
        else:
            _CODECS[name] = _pamqp_codec()
    return _CODECS[name]


# --------------------------------------------------------- ratio table


@dataclass(frozen=True)
class Result:
    median: float  # seconds per round
    minimum: float
    messages: int


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[[Any, str, str, int], None]:
    """Keep a finished benchmark's timing for the table printed at the end."""
    results = request.config.stash.setdefault(_RESULTS_KEY, {})

    def record(benchmark: Any, scenario: str, implementation: str, messages: int) -> None:
        benchmark.extra_info["messages"] = messages
        if benchmark.stats is None:  # --benchmark-disable: nothing was timed
            return
        stats = benchmark.stats.stats
        benchmark.extra_info["us_per_message_min"] = stats.min / messages * 1e6
        benchmark.extra_info["messages_per_second_min"] = messages / stats.min
        benchmark.extra_info["messages_per_second_median"] = messages / stats.median
        results.setdefault(scenario, {})[implementation] = Result(stats.median, stats.min, messages)

    return record


def _ratio(row: dict[str, Result], fast: str, stat: str) -> str:
    if "pamqp" not in row or fast not in row:
        return "n/a"
    return f"{getattr(row['pamqp'], stat) / getattr(row[fast], stat):.1f}x"


def _per_message(row: dict[str, Result], name: str) -> str:
    result = row.get(name)
    return "n/a" if result is None else f"{result.minimum / result.messages * 1e6:.3f}"


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS_KEY, None)
    if not results:
        return
    write = terminalreporter.write_line
    terminalreporter.section("amqpfast codec: pamqp time / amqpfast time, per-message cost")
    # Both statistics: min is the cost without interference from other processes,
    # median shows how much a busy machine moved it.
    write(
        f"{'scenario':<29} {'pamqp/c':>15} {'pamqp/py':>15} {'c msg/s':>11}"
        f" {'us/msg:':>8} {'c':>6} {'py':>7} {'pamqp':>7}"
    )
    write(f"{'':<29} {'min   median':>15} {'min   median':>15} {'(min)':>11} {'(min)':>8}")
    for scenario in sorted(results):
        row = results[scenario]
        c_result = row.get("amqpfast-c")
        rate = "n/a" if c_result is None else f"{c_result.messages / c_result.minimum:,.0f}"
        write(
            f"{scenario:<29}"
            f" {_ratio(row, 'amqpfast-c', 'minimum'):>7} {_ratio(row, 'amqpfast-c', 'median'):>7}"
            f" {_ratio(row, 'amqpfast-py', 'minimum'):>7} {_ratio(row, 'amqpfast-py', 'median'):>7}"
            f" {rate:>11} {'':>8} {_per_message(row, 'amqpfast-c'):>6}"
            f" {_per_message(row, 'amqpfast-py'):>7} {_per_message(row, 'pamqp'):>7}"
        )
    write(f"Python {sys.version.split()[0]}; {N_MESSAGES} messages per round")
    write(config.stash.get(_HEAP_KEY, ""))
