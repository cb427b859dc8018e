"""Frame codec benchmarks: amqpfast compiled vs its pure-Python twin vs pamqp.

Each test runs the operation once outside the timer and checks the output
against the inputs, so a codec that drops or garbles messages fails instead of
posting a fast number; the value of the last timed round is checked as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import (
    CHANNEL,
    CONSUMER_TAG,
    CONTENT_TYPE,
    DELIVERY_MODE,
    EXCHANGE,
    HEADERS,
    N_MESSAGES,
    ROUTING_KEY,
    Codec,
    pamqp_decode,
    pamqp_frames,
)
from pamqp import commands

Record = Callable[[Any, str, str, int], None]


def _expected_deliveries(bodies: list[bytes]) -> list[tuple[Any, ...]]:
    return [
        (
            tag,
            CONSUMER_TAG,
            EXCHANGE,
            ROUTING_KEY,
            CONTENT_TYPE,
            DELIVERY_MODE,
            HEADERS,
            body,
        )
        for tag, body in enumerate(bodies, 1)
    ]


def _check_deliveries(codec: Codec, events: list[Any], bodies: list[bytes]) -> None:
    assert len(events) == len(bodies), f"{codec.name} decoded {len(events)} messages"
    got = [codec.view(event) for event in events]
    assert got == _expected_deliveries(bodies), f"{codec.name} decoded wrong messages"


def _joined(output: Any) -> bytes:
    # amqpfast hands out a list of pieces for writelines, pamqp one bytes
    return output if isinstance(output, bytes) else b"".join(output)


def _check_publishes(codec: Codec, output: Any, bodies: list[bytes]) -> None:
    data = _joined(output)
    frames = pamqp_frames(data)
    assert {channel for channel, _ in frames} == {CHANNEL}
    got = [
        (
            type(method),
            method.exchange,
            method.routing_key,
            method.mandatory,
            method.immediate,
            header.properties.content_type,
            header.properties.delivery_mode,
            header.properties.headers,
            body,
        )
        for method, header, body in pamqp_decode(data)
    ]
    expected = [
        (
            commands.Basic.Publish,
            EXCHANGE,
            ROUTING_KEY,
            False,
            False,
            CONTENT_TYPE,
            DELIVERY_MODE,
            HEADERS,
            body,
        )
        for body in bodies
    ]
    assert got == expected, f"{codec.name} encoded wrong publishes"


def _check_acks(codec: Codec, output: Any, count: int) -> None:
    got = [
        (channel, type(value), value.delivery_tag, value.multiple)
        for channel, value in pamqp_frames(_joined(output))
    ]
    expected = [(CHANNEL, commands.Basic.Ack, tag, False) for tag in range(1, count + 1)]
    assert got == expected, f"{codec.name} encoded wrong acks"


def test_decode_deliveries(
    benchmark: Any,
    record: Record,
    codec: Codec,
    body_size: str,
    bodies: list[bytes],
    delivery_stream: bytes,
) -> None:
    """One feed of N Basic.Deliver + header + body frames -> N whole messages."""
    scenario = f"decode-deliver-{body_size}"
    _check_deliveries(codec, codec.decode(delivery_stream), bodies)
    benchmark.group = scenario
    events = benchmark(codec.decode, delivery_stream)
    assert len(events) == N_MESSAGES
    assert codec.view(events[-1])[-1] == bodies[-1]
    record(benchmark, scenario, codec.name, N_MESSAGES)


# 64 B x 1000 messages fit in one read, so only the large bodies differ here
@pytest.mark.parametrize("body_size", ["16KiB"], indirect=True)
def test_decode_deliveries_in_reads(
    benchmark: Any,
    record: Record,
    codec: Codec,
    body_size: str,
    bodies: list[bytes],
    delivery_stream: bytes,
    delivery_reads: list[bytes],
) -> None:
    """As above, but fed in 256 KiB socket reads instead of one multi-megabyte feed."""
    scenario = f"decode-deliver-{body_size}-in-reads"
    if codec.decode_reads is None:
        decode, data = codec.decode, delivery_stream
    else:
        decode, data = codec.decode_reads, delivery_reads
    _check_deliveries(codec, decode(data), bodies)
    benchmark.group = scenario
    events = benchmark(decode, data)
    assert len(events) == N_MESSAGES
    assert codec.view(events[-1])[-1] == bodies[-1]
    record(benchmark, scenario, codec.name, N_MESSAGES)


def test_encode_publishes(
    benchmark: Any, record: Record, codec: Codec, body_size: str, bodies: list[bytes]
) -> None:
    """N Basic.Publish + header + body frames into one output, ready for the transport."""
    scenario = f"encode-publish-{body_size}"
    _check_publishes(codec, codec.publish(bodies), bodies)
    benchmark.group = scenario
    output = benchmark(codec.publish, bodies)
    assert len(_joined(output)) == len(_joined(codec.publish(bodies)))
    record(benchmark, scenario, codec.name, N_MESSAGES)


def test_encode_acks(benchmark: Any, record: Record, codec: Codec) -> None:
    """N Basic.Ack frames (one per delivery tag) into one output."""
    scenario = "encode-ack"
    _check_acks(codec, codec.ack(N_MESSAGES), N_MESSAGES)
    benchmark.group = scenario
    output = benchmark(codec.ack, N_MESSAGES)
    assert len(_joined(output)) == 21 * N_MESSAGES  # 8 frame + 4 method + 8 tag + 1 bits
    record(benchmark, scenario, codec.name, N_MESSAGES)
