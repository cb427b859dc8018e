"""Request/reply (RPC) against its floor and against the four messages it moves.

One run measures sequential round trips, caller and callee in this process on
connections of their own, against the local RabbitMQ:

- **floor**: the thinnest loop on ``amqpfast.core``: no confirms, plain-function
  no_ack consumers, the callee replies with ``channel.publish`` without
  waiting, the caller resolves one future per call. What the broker needs.
- **low level**: client_runners' ``Rpc`` scenario with amqpfast's client.
- **patterns.RPC**: ``amqpfast.patterns.RPC`` on the aio-pika-style API, with
  a result queue and with direct reply-to.
- **the four messages' baseline**: a round trip is two publishes and two
  deliveries, so 2 x the CPU per message of ``exchange.publish`` (no confirms)
  + 2 x that of ``Queue.consume`` with an acking callback (api_runners'
  scenarios, same run, same loop); and the same with confirmed publishes.

Issue 13's targets: CPU per call at most 3x the four messages' CPU, and a
median latency at most 1.3x the floor's. Each scenario runs a warm-up, then
the timed calls (wall, this process's CPU from getrusage, perf_counter around
each call), and then checks that every reply carried its request's value.
Rounds are interleaved (every scenario once per round, on every loop) so that
noise on the machine hits them alike; each figure is the median of the rounds.

``.venv/bin/python benchmarks/rpc_runner.py [--loop asyncio|uvloop|both] [--calls N]``
(about 40 s for both loops; the tables go to stdout, each round's figures to
stderr). As in client_runners: ``AMQPFAST_BENCH_ROUNDS`` (3),
``AMQPFAST_BENCH_MESSAGES`` (the baselines' 20,000) and ``AMQPFAST_BENCH_CALLS``
(the default of ``--calls``, 5,000 here).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from importlib.metadata import version
from typing import Any, ClassVar

from api_runners import CONFIRM_WINDOW, ApiRounds
from client_runners import (
    LOOPS,
    QUEUE_PREFIX,
    WAIT,
    AmqpfastClient,
    Measurement,
    Meter,
    Rounds,
    Rpc,
    Settings,
)

import amqpfast
import amqpfast.core
from amqpfast.codec import IMPLEMENTATION, BasicProperties
from amqpfast.patterns import RPC

WARM_UP_CALLS = 300  # before the timed ones: bytecode specialised, buffers grown
DEFAULT_CALLS = int(os.environ.get("AMQPFAST_BENCH_CALLS", 5_000))
CPU_TARGET = 3.0  # CPU per call / the four messages' CPU, at most
LATENCY_TARGET = 1.3  # median latency / the floor's, at most


@dataclass(frozen=True)
class Timed(Measurement):
    """A phase of calls (``messages`` counts the calls) and its latencies in seconds."""

    p50: float
    p90: float
    p99: float

    @classmethod
    def median(cls, rounds: list[Measurement]) -> Timed:
        """Each figure the median of the rounds' (one odd round moves none of them)."""

        def middle(field: str) -> float:
            return statistics.median(getattr(measured, field) for measured in rounds)

        fields = ("wall", "cpu", "p50", "p90", "p99")
        return cls(rounds[0].messages, *map(middle, fields))


def numbered_body(number: int, size: int) -> bytes:
    """``size`` bytes that start with ``number``: a reply to another call shows."""
    return number.to_bytes(8, "big") + bytes(size - 8)


# ------------------------------------------------------------ the scenarios


class _SequentialCalls:
    """Calls one after the other: ``call(n)`` must come back with ``answer(n)``.

    The subclass's setup ends with :meth:`warm_up`; :meth:`measure` times the
    next ``settings.calls`` calls, :meth:`verify` fails a round with a wrong reply.
    """

    name: ClassVar[str]  # also in the names of the queues it declares
    label: ClassVar[str]  # its row in the table
    fake: ClassVar[bool] = False
    settings: Settings
    wrong = 0

    def call(self, number: int) -> Awaitable[Any]:
        raise NotImplementedError

    def answer(self, number: int) -> Any:
        raise NotImplementedError

    async def _calls(self, first: int, count: int) -> list[float]:
        call, answer, clock = self.call, self.answer, time.perf_counter
        latencies = [0.0] * count
        async with asyncio.timeout(WAIT):  # one timer for the phase, not one per call
            for index in range(count):
                number = first + index
                started = clock()
                result = await call(number)
                latencies[index] = clock() - started
                if result != answer(number):
                    self.wrong += 1
        return latencies

    async def warm_up(self) -> None:
        await self._calls(0, WARM_UP_CALLS)

    async def measure(self) -> Timed:
        count = self.settings.calls
        meter = Meter()
        latencies = await self._calls(WARM_UP_CALLS, count)
        measured = meter.stop(count)
        cuts = statistics.quantiles(latencies, n=100)  # cuts[k - 1] is the k-th percentile
        return Timed(measured.messages, measured.wall, measured.cpu, cuts[49], cuts[89], cuts[98])

    async def verify(self, measurement: Measurement) -> None:
        assert self.wrong == 0, f"{self.label}: {self.wrong} wrong replies"
        assert measurement.messages == self.settings.calls


class Floor(_SequentialCalls):
    """The thinnest request/reply on amqpfast.core: nothing awaited but the reply."""

    name = "floor"
    label = "floor (core, plain callbacks)"

    def __init__(self, client: type[Any], settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.connections: list[amqpfast.core.Connection] = []
        self.declared: list[tuple[amqpfast.core.Channel, str]] = []
        self.pending: asyncio.Future[bytes] | None = None
        self.correlation_id = ""
        self.strays = 0  # replies to no call, or to an earlier one

    async def _channel_with_queue(self) -> tuple[amqpfast.core.Channel, str]:
        connection = await amqpfast.core.connect(self.url)
        self.connections.append(connection)
        channel = await connection.channel(publisher_confirms=False)
        # server-named and exclusive: unique, and gone with the connection at worst
        queue = (await channel.queue_declare("", exclusive=True)).queue
        self.declared.append((channel, queue))
        return channel, queue

    async def setup(self) -> None:
        self.loop = asyncio.get_running_loop()
        size = self.settings.body_size
        self.bodies = [numbered_body(n, size) for n in range(WARM_UP_CALLS + self.settings.calls)]
        callee, self.queue = await self._channel_with_queue()
        self.caller, self.reply_to = await self._channel_with_queue()

        def serve(request: amqpfast.core.DeliveredMessage) -> None:
            properties = request.properties
            # queued for this read's write, nothing to await without confirms
            callee.publish(
                request.body,
                "",
                properties.reply_to or "",
                BasicProperties(correlation_id=properties.correlation_id),
            )

        await callee.basic_consume(self.queue, serve, no_ack=True)
        await self.caller.basic_consume(self.reply_to, self._on_reply, no_ack=True)
        await self.warm_up()

    def _on_reply(self, reply: amqpfast.core.DeliveredMessage) -> None:
        future = self.pending
        if future is None or reply.properties.correlation_id != self.correlation_id:
            self.strays += 1
            return
        self.pending = None
        future.set_result(reply.body)

    def call(self, number: int) -> asyncio.Future[bytes]:
        # a plain function returning the future: not even a coroutine per call
        future = self.pending = self.loop.create_future()
        correlation_id = self.correlation_id = str(number)
        properties = BasicProperties(reply_to=self.reply_to, correlation_id=correlation_id)
        self.caller.publish(self.bodies[number], "", self.queue, properties)
        return future

    def answer(self, number: int) -> bytes:
        return self.bodies[number]

    async def verify(self, measurement: Measurement) -> None:
        await super().verify(measurement)
        assert self.strays == 0, f"{self.label}: {self.strays} stray replies"

    async def teardown(self) -> None:
        try:
            for channel, queue in self.declared:
                if not channel.is_closed:
                    await channel.queue_delete(queue)
        finally:
            for connection in self.connections:
                await connection.close()


class LowLevel(_SequentialCalls, Rpc):
    """client_runners' Rpc scenario for amqpfast, each of its calls timed on its own.

    Its own client and callee; the calls go through ``AmqpfastClient.call_rpc``
    one at a time (one coroutine more per call than its loop of many: well under 1 µs).
    """

    name = "low-level"
    label = "low level (client_runners Rpc)"

    async def setup(self) -> None:
        await super().setup()  # Rpc's: request queue, callee, reply queue and its listener
        size = self.settings.body_size
        self.bodies = [numbered_body(n, size) for n in range(WARM_UP_CALLS + self.settings.calls)]
        await self.warm_up()

    def call(self, number: int) -> Awaitable[int]:
        # the correlation id is "0" each time: a late reply resolves the next
        # call with another call's body, which counts as wrong
        client, body = self.client, self.bodies[number]
        return client.call_rpc(self.channel, self.queue, self.reply_queue, body, 1)

    def answer(self, number: int) -> int:
        return 1  # call_rpc's count of right replies


async def double(*, value: int) -> int:
    return value * 2


class PatternsRpc(_SequentialCalls):
    """``RPC.create`` on the aio-pika-style API; callee and caller on their own connections.

    The channels are ``connection.channel()``'s: with publisher confirms, as
    aio-pika users get them, so each call and each reply waits for its confirm.
    """

    name = "rpc"
    label = "patterns.RPC"
    direct_reply_to: ClassVar[bool] = False

    def __init__(self, client: type[Any], settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.connections: list[Any] = []
        self.rpcs: list[RPC] = []
        # unique, unlike "double": a queue of another program is not ours to serve
        self.method = f"{QUEUE_PREFIX}.{self.name}.{uuid.uuid4().hex[:12]}"

    async def _rpc(self, direct_reply_to: bool = False) -> RPC:
        connection = await amqpfast.connect(self.url)
        self.connections.append(connection)
        rpc = await RPC.create(await connection.channel(), direct_reply_to=direct_reply_to)
        self.rpcs.append(rpc)
        return rpc

    async def setup(self) -> None:
        callee = await self._rpc()
        await callee.register(self.method, double, auto_delete=True)
        self.caller = await self._rpc(self.direct_reply_to)
        await self.warm_up()

    def call(self, number: int) -> Awaitable[int]:
        return self.caller.call(self.method, {"value": number})

    def answer(self, number: int) -> int:
        return number * 2

    async def teardown(self) -> None:
        # caller first: its result queue goes; then the callee's method queue
        # (auto-delete, its consumer cancelled) and its result queue
        try:
            for rpc in reversed(self.rpcs):
                await rpc.close()
        finally:
            for connection in self.connections:
                await connection.close()


class PatternsRpcDirect(PatternsRpc):
    name = "rpc-direct"
    label = "patterns.RPC, direct reply-to"
    direct_reply_to = True


RPC_SCENARIOS: dict[str, type[_SequentialCalls]] = {
    scenario.name: scenario for scenario in (Floor, LowLevel, PatternsRpc, PatternsRpcDirect)
}
# the low level's client; the other scenarios bring their own connections
CLIENTS: dict[str, type[AmqpfastClient]] = {"amqpfast": AmqpfastClient}


class RpcRounds(Rounds):
    """client_runners' rounds (a fresh loop each) over these scenarios."""

    scenarios = RPC_SCENARIOS
    clients = CLIENTS


BASELINES = ("publish", "consume+ack", "publish+confirm")  # api_runners' scenarios


# ------------------------------------------------------------ the table


def _ceil(value: float) -> float:
    # shown rounded up: a ratio printed as 3.00x has met a target of 3x
    return math.ceil(value * 100) / 100


def _verdict(ratio: float, target: float) -> str:
    return f"{_ceil(ratio):>6.2f}x {'met' if ratio <= target else 'MISSED':<6}"


def table(
    loop: str, calls: dict[str, Timed], baselines: dict[str, Measurement], calls_run: int
) -> list[str]:
    """One loop's table: each scenario's figures, issue 13's two ratios and two more.

    CPU / floor and CPU / 4 msgs with confirms have no target: they say how
    much of a call's CPU the floor already spends, and what patterns.RPC's
    confirming channels would cost as four separate messages.
    """
    publish, consume = baselines["publish"].cpu_us, baselines["consume+ack"].cpu_us
    confirmed = baselines["publish+confirm"].cpu_us
    four = 2 * publish + 2 * consume
    four_confirmed = 2 * confirmed + 2 * consume
    floor = calls[Floor.name]
    width = max(len(scenario.label) for scenario in RPC_SCENARIOS.values())
    lines = [
        f"request/reply on {loop}: {calls_run:,} sequential calls per round",
        f"{'':<{width}} {'':>8} {'CPU':>7} {'latency µs':^23} | CPU / | {'CPU / 4 msgs':^15}"
        f" | {'p50 / floor':^15} | CPU / 4 msgs",
        f"{'scenario':<{width}} {'calls/s':>8} {'µs/call':>7} {'p50':>7} {'p90':>7} {'p99':>7}"
        f" | floor | {f'target <={CPU_TARGET:g}x':^15} | {f'target <={LATENCY_TARGET:g}x':^15}"
        f" | with confirms",
    ]
    for name, scenario in RPC_SCENARIOS.items():
        measured = calls[name]
        lines.append(
            f"{scenario.label:<{width}} {measured.rate:>8,.0f} {measured.cpu_us:>7.1f}"
            f" {measured.p50 * 1e6:>7.1f} {measured.p90 * 1e6:>7.1f} {measured.p99 * 1e6:>7.1f}"
            f" | {measured.cpu_us / floor.cpu_us:>4.2f}x"
            f" | {_verdict(measured.cpu_us / four, CPU_TARGET)}"
            f" | {_verdict(measured.p50 / floor.p50, LATENCY_TARGET)}"
            f" | {_ceil(measured.cpu_us / four_confirmed):>6.2f}x"
        )
    lines += [
        f"four messages' baseline: 2 x publish {publish:.2f} + 2 x consume+ack {consume:.2f}"
        f" = {four:.2f} µs CPU (3x: {CPU_TARGET * four:.1f} µs)",
        f"with confirms:           2 x publish+confirm {confirmed:.2f}"
        f" + 2 x consume+ack {consume:.2f} = {four_confirmed:.2f} µs CPU",
    ]
    return lines


def footer(settings: Settings) -> str:
    call_size = len(RPC.SERIALIZER.dumps({"value": settings.calls}))
    result_size = len(RPC.SERIALIZER.dumps(2 * settings.calls))
    return (
        f"{settings.calls:,} calls per round after {WARM_UP_CALLS} warm-up calls;"
        f" bodies of {settings.body_size} B (patterns.RPC: pickled, about {call_size} B"
        f" a call, {result_size} B a result); baselines: {settings.messages:,} messages"
        f" per round, confirms in gather windows of {CONFIRM_WINDOW}; median of"
        f" {settings.rounds} interleaved rounds, each figure on its own; CPU = user+sys"
        f" of this process (getrusage), both ends in it; Python {sys.version.split()[0]};"
        f" codec {IMPLEMENTATION}; uvloop {version('uvloop')}"
    )


# ------------------------------------------------------------ the script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=[*LOOPS, "both"], default="both")
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS, help="timed calls per round")
    options = parser.parse_args(argv)
    settings = replace(Settings(), calls=options.calls)
    loops = list(LOOPS) if options.loop == "both" else [options.loop]
    url = settings.url

    rpc_rounds = {
        (loop, name): RpcRounds(name, "amqpfast", loop, settings, url)
        for loop in loops
        for name in RPC_SCENARIOS
    }
    baseline_rounds = {
        (loop, name): ApiRounds(name, "amqpfast", loop, settings, url)
        for loop in loops
        for name in BASELINES
    }
    every: list[tuple[str, Rounds]] = [
        *((f"{loop} {name}", rounds) for (loop, name), rounds in rpc_rounds.items()),
        *((f"{loop} {name}", rounds) for (loop, name), rounds in baseline_rounds.items()),
    ]
    started = time.perf_counter()
    for round_number in range(settings.rounds):
        # each round starts one further along: no scenario always follows the same one
        shift = round_number % len(every)
        for what, rounds in every[shift:] + every[:shift]:
            rounds.run(1)  # one more round: it joins the others in rounds.measurements
            measured = rounds.measurements[-1]
            print(
                f"round {round_number + 1}/{settings.rounds} {what:<22}"
                f" {measured.rate:>9,.0f}/s {measured.cpu_us:>7.2f} µs CPU",
                file=sys.stderr,
                flush=True,
            )

    for loop in loops:
        calls = {
            name: Timed.median(rpc_rounds[(loop, name)].measurements) for name in RPC_SCENARIOS
        }
        baselines = {name: baseline_rounds[(loop, name)].result for name in BASELINES}
        print("\n".join(table(loop, calls, baselines, settings.calls)), end="\n\n")
    print(footer(settings))
    print(f"({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
