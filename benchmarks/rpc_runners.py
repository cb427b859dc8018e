"""Request/reply round trips: amqpfast's RPC and low-level loop against their floor.

Sequential calls (and 32 at once), caller and callee in this process on
connections of their own, against RabbitMQ; the CPU (getrusage, both ends)
and the latency of each call (perf_counter around it):

- ``floor``: the thinnest loop amqpfast.core allows — no confirms, no_ack
  consumers with plain-function callbacks, the reply published without
  waiting, one future per call: what the broker itself needs;
- ``floor+conf``: the same on confirm channels, what RPC's default channel
  asks of the broker: the caller awaits its request's confirm, the callee
  acks the request when its reply is confirmed (from a done callback);
- ``low level``: the loop as aiormq code writes it — coroutine callbacks,
  ``await channel.basic_publish(...)`` for the request and the reply;
- ``RPC`` and ``RPC direct``: ``amqpfast.patterns.RPC`` (the confirm channel
  it gets by default), with a result queue and with direct reply-to; their
  latency is held against ``floor+conf``;
- ``RPC no conf``: ``RPC`` on channels without publisher confirms, held
  against ``floor``;
- ``floor+conf x32`` and ``RPC x32``: the same with 32 callers at once, each
  making its calls one after another: CPU per call once calls share socket
  reads, writes and loop turns, as in the throughput scenarios the four
  messages are measured with (their latency includes waiting in line, so
  it is not held against a floor).

A round trip moves four messages (two publishes, two deliveries); their cost
elsewhere is measured in the same run with the aio-pika API's throughput
scenarios: 2 x ``publish`` + 2 x ``consume+ack`` (api_runners.py). The two
ratios printed are the ones the speed work aims at: CPU per call over the four
messages' (at most 3x) and p50 latency over the floor's (at most 1.3x).

    .venv/bin/python benchmarks/rpc_runners.py [--loop uvloop] [-k RPC]

``AMQPFAST_BENCH_CALLS`` (default 2000) and ``AMQPFAST_BENCH_ROUNDS`` (3) as
for the other runners; each round runs on a fresh event loop, the scenarios
interleaved, and every figure is the median over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from api_runners import ApiRounds
from client_runners import LOOPS, Meter, Settings

import amqpfast
import amqpfast.core
from amqpfast.codec import IMPLEMENTATION, BasicProperties
from amqpfast.patterns import RPC

WARM_UP = 200  # calls before the measured ones: connections and caches settle
CPU_TARGET = 3.0  # CPU per call / the four messages' CPU, at most
LATENCY_TARGET = 1.3  # p50 / the floor's p50, at most
IN_FLIGHT = 32  # callers at once in the "x32" scenarios


@dataclass(frozen=True)
class Calls:
    """One round of one scenario: CPU per call and every call's latency, in µs."""

    cpu_us: float
    rate: float
    latencies: list[float]

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


Call = Callable[[bytes], Awaitable[bytes]]


async def _measure(call: Call, settings: Settings, callers: int = 1) -> Calls:
    """The warm-up, then the measured calls, made by ``callers`` at once, each
    one call after another; every reply must be the request's body."""
    body = settings.body
    for _ in range(WARM_UP):
        assert await call(body) == body, "a wrong reply"
    latencies: list[float] = []
    left = settings.calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            reply = await call(body)
            latencies.append((time.perf_counter() - started) * 1e6)
            if reply != body:
                raise AssertionError(f"a wrong reply: {reply!r}")

    meter = Meter()
    if callers == 1:
        await caller()  # in this task, as a sequential caller runs: no Task of its own
    else:
        await asyncio.gather(*(caller() for _ in range(callers)))
    measured = meter.stop(settings.calls)
    return Calls(measured.cpu_us, measured.rate, latencies)


# ------------------------------------------------------------ the scenarios


async def _floor(settings: Settings, confirms: bool, callers: int = 1) -> Calls:
    """The thinnest loop; with ``confirms`` the caller awaits its request's
    confirm and the callee acks the request once its reply is confirmed (from
    a done callback, no coroutine)."""
    core = amqpfast.core
    caller, callee = await core.connect(settings.url), await core.connect(settings.url)
    try:
        server = await callee.channel(publisher_confirms=confirms)
        requests = (await server.queue_declare("", exclusive=True)).queue

        def serve(message: Any) -> None:
            reply = BasicProperties(correlation_id=message.properties.correlation_id)
            sent = server.publish(message.body, "", message.properties.reply_to, reply)
            if confirms:
                tag = message.delivery_tag
                sent.add_done_callback(lambda _: server.basic_ack(tag))
            else:
                assert sent is None, "the floor's callee had to wait"

        await server.basic_consume(requests, serve, no_ack=not confirms)
        client = await caller.channel(publisher_confirms=confirms)
        replies = (await client.queue_declare("", exclusive=True)).queue
        waiting: dict[str, asyncio.Future[bytes]] = {}

        def on_reply(message: Any) -> None:
            waiting.pop(message.properties.correlation_id).set_result(message.body)

        await client.basic_consume(replies, on_reply, no_ack=True)
        loop = asyncio.get_running_loop()
        numbers = iter(range(10**9))

        async def call(body: bytes) -> bytes:
            correlation_id = str(next(numbers))
            future = waiting[correlation_id] = loop.create_future()
            request = BasicProperties(correlation_id=correlation_id, reply_to=replies)
            sent = client.publish(body, "", requests, request)
            if sent is not None:
                await sent
            return await future

        return await _measure(call, settings, callers)
    finally:
        await caller.close()
        await callee.close()


async def floor(settings: Settings) -> Calls:
    return await _floor(settings, confirms=False)


async def floor_confirms(settings: Settings) -> Calls:
    return await _floor(settings, confirms=True)


async def floor_confirms_in_flight(settings: Settings) -> Calls:
    return await _floor(settings, confirms=True, callers=IN_FLIGHT)


async def low_level(settings: Settings) -> Calls:
    core = amqpfast.core
    caller, callee = await core.connect(settings.url), await core.connect(settings.url)
    try:
        server = await callee.channel(publisher_confirms=False)
        requests = (await server.queue_declare("", exclusive=True)).queue

        async def serve(message: Any) -> None:
            await server.basic_publish(
                message.body,
                routing_key=message.properties.reply_to,
                properties=BasicProperties(correlation_id=message.properties.correlation_id),
            )

        await server.basic_consume(requests, serve, no_ack=True)
        client = await caller.channel(publisher_confirms=False)
        replies = (await client.queue_declare("", exclusive=True)).queue
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: Any) -> None:
            waiting.pop(message.properties.correlation_id).set_result(message.body)

        await client.basic_consume(replies, on_reply, no_ack=True)
        loop = asyncio.get_running_loop()

        async def call(body: bytes) -> bytes:
            correlation_id = uuid.uuid4().hex
            future = waiting[correlation_id] = loop.create_future()
            await client.basic_publish(
                body,
                routing_key=requests,
                properties=BasicProperties(correlation_id=correlation_id, reply_to=replies),
            )
            return await future

        return await _measure(call, settings)
    finally:
        await caller.close()
        await callee.close()


async def _rpc(
    settings: Settings,
    direct_reply_to: bool,
    confirms: bool = True,
    callers: int = 1,
) -> Calls:
    caller, callee = await amqpfast.connect(settings.url), await amqpfast.connect(settings.url)
    try:
        server = await RPC.create(await callee.channel(publisher_confirms=confirms))
        method = f"bench.echo.{uuid.uuid4().hex[:8]}"

        async def echo(*, value: bytes) -> bytes:
            return value

        await server.register(method, echo, auto_delete=True)
        client = await RPC.create(
            await caller.channel(publisher_confirms=confirms), direct_reply_to=direct_reply_to
        )

        async def call(body: bytes) -> bytes:
            reply: bytes = await client.call(method, kwargs={"value": body})
            return reply

        return await _measure(call, settings, callers)
    finally:
        await caller.close()
        await callee.close()


async def rpc(settings: Settings) -> Calls:
    return await _rpc(settings, direct_reply_to=False)


async def rpc_direct(settings: Settings) -> Calls:
    return await _rpc(settings, direct_reply_to=True)


async def rpc_no_confirms(settings: Settings) -> Calls:
    return await _rpc(settings, direct_reply_to=False, confirms=False)


async def rpc_in_flight(settings: Settings) -> Calls:
    return await _rpc(settings, direct_reply_to=False, callers=IN_FLIGHT)


Scenario = Callable[[Settings], Awaitable[Calls]]
# name: (the scenario, the floor its latency is held against)
SCENARIOS: dict[str, tuple[Scenario, str | None]] = {
    "floor": (floor, None),
    "floor+conf": (floor_confirms, None),
    "low level": (low_level, "floor"),
    "RPC": (rpc, "floor+conf"),
    "RPC direct": (rpc_direct, "floor+conf"),
    "RPC no conf": (rpc_no_confirms, "floor"),
    # calls in flight at once: what a call costs once many share each socket
    # read, write and loop turn (latency then includes waiting in line)
    "floor+conf x32": (floor_confirms_in_flight, None),
    "RPC x32": (rpc_in_flight, None),
}


# ------------------------------------------------------------ the run


def four_messages(loop: str, settings: Settings) -> tuple[float, float]:
    """CPU µs per message of the aio-pika API's publish and consume+ack, this run."""
    publish = ApiRounds("publish", "amqpfast", loop, settings, settings.url)
    consume = ApiRounds("consume+ack", "amqpfast", loop, settings, settings.url)
    return publish.run(settings.rounds).cpu_us, consume.run(settings.rounds).cpu_us


def run_rounds(names: list[str], loop: str, settings: Settings) -> dict[str, list[Calls]]:
    """Every scenario once per round, interleaved, each round on a fresh event loop."""
    results: dict[str, list[Calls]] = {name: [] for name in names}
    for _ in range(settings.rounds):
        for name in names:
            with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
                calls = runner.run(asyncio.wait_for(SCENARIOS[name][0](settings), 300))
            results[name].append(calls)
            p50 = calls.percentile(0.5)
            print(
                f"{name:<12} {loop:<7} {calls.cpu_us:8.1f} µs CPU  p50 {p50:8.1f} µs",
                file=sys.stderr,
                flush=True,
            )
    return results


def table(
    loop: str, results: dict[str, list[Calls]], publish_us: float, consume_us: float
) -> list[str]:
    four = 2 * publish_us + 2 * consume_us
    width = max(len("scenario"), *(len(name) for name in results))
    p50s = {
        name: statistics.median(r.percentile(0.5) for r in rounds)
        for name, rounds in results.items()
    }
    lines = [
        f"{'scenario':<{width}} {loop:<7} | {'calls/s':>8} {'CPU µs':>7} | {'p50 µs':>7} "
        f"{'p90 µs':>7} {'p99 µs':>7} | {'CPU/4 msgs':>10} <={CPU_TARGET:g}x | "
        f"{'p50/floor':>9} <={LATENCY_TARGET:g}x"
    ]
    for name, rounds in results.items():
        cpu = statistics.median(r.cpu_us for r in rounds)
        rate = statistics.median(r.rate for r in rounds)
        p50, p90, p99 = (
            statistics.median(r.percentile(q) for r in rounds) for q in (0.5, 0.9, 0.99)
        )
        cpu_ratio = cpu / four
        cpu_cell = f"{cpu_ratio:>9.1f}x {'met' if cpu_ratio <= CPU_TARGET else 'MISSED':<6}"
        floor_name = SCENARIOS[name][1]
        if floor_name is None or floor_name not in p50s:
            latency_cell = f"{'-':>10}"
        else:
            ratio = p50 / p50s[floor_name]
            verdict = "met" if ratio <= LATENCY_TARGET else "MISSED"
            latency_cell = f"{ratio:>8.2f}x {verdict:<6} (vs {floor_name})"
        lines.append(
            f"{name:<{width}} {loop:<7} | {rate:>8,.0f} {cpu:>7.1f} | {p50:>7.1f} {p90:>7.1f} "
            f"{p99:>7.1f} | {cpu_cell} | {latency_cell}"
        )
    lines.append(
        f"four messages ({loop}): 2 x publish {publish_us:.2f} + 2 x consume+ack "
        f"{consume_us:.2f} = {four:.2f} µs CPU (the aio-pika API, this run)"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", action="append", choices=list(LOOPS))
    parser.add_argument("-k", dest="match", default="", help="scenarios whose name contains it")
    options = parser.parse_args(argv)
    settings = Settings()
    names = [name for name in SCENARIOS if options.match in name]
    for name in list(names):  # the latency ratio needs the floor each is held against
        floor_name = SCENARIOS[name][1]
        if floor_name is not None and floor_name not in names:
            names.insert(0, floor_name)
    output = []
    for loop in options.loop or list(LOOPS):
        results = run_rounds(names, loop, settings)
        publish_us, consume_us = four_messages(loop, settings)
        output += [*table(loop, results, publish_us, consume_us), ""]
    output.append(
        f"{settings.calls} sequential calls of {settings.body_size} B per round after "
        f"{WARM_UP} to warm up; median of {settings.rounds} rounds; CPU = user+sys of this "
        f"process (both ends); codec {IMPLEMENTATION}; Python {sys.version.split()[0]}; "
        f"uvloop {version('uvloop')}"
    )
    print("\n".join(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
