"""amqpfast's aio-pika-style API against aio-pika itself: the same code for both.

Every scenario is written once against a module, ``lib``, and run with
``lib=amqpfast`` and ``lib=aio_pika``: ``lib.connect``, ``channel.default_exchange``,
``Exchange.publish(lib.Message(body), routing_key)``, ``Queue.consume`` with a
callback that acks, ``Queue.iterator()`` with ``message.process()``. As in
client_runners.py, only the phase that moves the messages is measured (wall time
and this process's CPU from getrusage), and afterwards every phase is checked
to have moved all of them.

Run without pytest (one table, or a selection for profiling):
``.venv/bin/python benchmarks/api_runners.py [--loop uvloop] [--lib amqpfast] [-k iterator]``
"""

from __future__ import annotations

import asyncio
import math
import sys
from importlib.metadata import version
from types import ModuleType
from typing import Any, ClassVar

import aio_pika
from client_runners import (
    CONSUMER_TAG,
    WAIT,
    Admin,
    Measurement,
    Meter,
    Results,
    Rounds,
    Settings,
    Tally,
    by_name,
    cell,
    cli,
    count_acks,
    rows,
)
from fake_broker import ACKS_QUEUE, SINK_QUEUE, delivery_queue
from wakeups import floors, wakeup_table

import amqpfast
from amqpfast.codec import IMPLEMENTATION

# the two libraries under test, by the name the table shows
LIBS: dict[str, ModuleType] = {"amqpfast": amqpfast, "aio-pika": aio_pika}
CONFIRM_WINDOW = 500  # publishes in flight at once, under one gather
TARGET = 10  # aio-pika's CPU per message / amqpfast's, same run, same loop


class ApiScenario:
    """setup, the measured phase, the checks, teardown; ``self.lib`` is the library."""

    name: ClassVar[str]
    fake: ClassVar[bool] = False
    confirms: ClassVar[bool] = False

    def __init__(self, lib: ModuleType, settings: Settings, url: str) -> None:
        self.lib = lib
        self.who = lib.__name__
        self.settings = settings
        self.url = url
        self.admin: Admin | None = None
        self.connection: Any = None
        self.channel: Any = None

    async def setup(self) -> None:
        if not self.fake:
            self.admin = await Admin().open(self.url)
        self.connection = await self.lib.connect(self.url)
        self.channel = await self.connection.channel(publisher_confirms=self.confirms)

    async def measure(self) -> Measurement:
        raise NotImplementedError

    async def verify(self, measurement: Measurement) -> None:
        expected = self.settings.messages
        assert measurement.messages == expected, f"{self.who}: {measurement.messages} of {expected}"

    async def teardown(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.is_closed:
            await connection.close()
        if self.admin is not None:
            await self.admin.close()

    async def _fake_count(self, queue: str) -> int:
        """What the fake broker counted on this connection (see fake_broker.py)."""
        declared = await self.channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)


class _Publish(ApiScenario):
    async def setup(self) -> None:
        await super().setup()
        self.queue = await self.admin.declare(self.name) if self.admin else SINK_QUEUE

    async def verify(self, measurement: Measurement) -> None:
        await super().verify(measurement)
        expected = self.settings.messages
        if self.admin is not None:
            arrived = await self.admin.wait_count(self.queue, expected)
        else:
            arrived = await self._fake_count(SINK_QUEUE)
        assert arrived == expected, f"{self.who}: {arrived} messages arrived"


class Publish(_Publish):
    """``await exchange.publish(Message(body), key)`` one by one, no confirms."""

    name = "publish"

    async def measure(self) -> Measurement:
        lib, body, queue, count = self.lib, self.settings.body, self.queue, self.settings.messages
        exchange = self.channel.default_exchange
        meter = Meter()
        for _ in range(count):
            await exchange.publish(lib.Message(body), routing_key=queue)
        # a round trip on the channel: every publish has left the client
        await self.channel.set_qos(prefetch_count=0)
        return meter.stop(count)


class PublishConfirmed(_Publish):
    """The default confirm channel; windows of publishes under ``asyncio.gather``."""

    name = "publish+confirm"
    confirms = True

    async def measure(self) -> Measurement:
        lib, body, queue, count = self.lib, self.settings.body, self.queue, self.settings.messages
        exchange = self.channel.default_exchange
        meter = Meter()
        acked = 0
        for start in range(0, count, CONFIRM_WINDOW):
            confirms = await asyncio.gather(
                *[
                    exchange.publish(lib.Message(body), routing_key=queue)
                    for _ in range(min(CONFIRM_WINDOW, count - start))
                ]
            )
            acked += count_acks(confirms)
        return meter.stop(acked)


class PublishConfirmedBatch(_Publish):
    """Windows of confirmed publishes as one batch: ``Exchange.publish_many``
    where the library has it (amqpfast), else ``asyncio.gather`` as above."""

    name = "batch+confirm"
    confirms = True

    async def measure(self) -> Measurement:
        lib, body, queue, count = self.lib, self.settings.body, self.queue, self.settings.messages
        exchange = self.channel.default_exchange
        publish_many = getattr(exchange, "publish_many", None)
        meter = Meter()
        acked = 0
        for start in range(0, count, CONFIRM_WINDOW):
            batch = [lib.Message(body) for _ in range(min(CONFIRM_WINDOW, count - start))]
            if publish_many is not None:
                confirms = await publish_many(batch, queue)
            else:
                confirms = await asyncio.gather(
                    *[exchange.publish(message, routing_key=queue) for message in batch]
                )
            acked += count_acks(confirms)
        return meter.stop(acked)


class _Consume(ApiScenario):
    """A pre-filled queue, prefetch 1000; every message acked."""

    async def setup(self) -> None:
        await super().setup()
        s = self.settings
        if self.admin is not None:
            name = await self.admin.declare(self.name)
            await self.admin.fill(name, s.body, s.messages, s.window)
        else:
            name = delivery_queue(s.messages)
        self.queue = await self.channel.declare_queue(name, passive=True)
        await self.channel.set_qos(prefetch_count=s.prefetch)
        self.tally = Tally()

    def _count(self, message: Any) -> None:
        tally = self.tally
        tally.count += 1
        tally.size += len(message.body)
        tally.last_tag = message.delivery_tag

    async def verify(self, measurement: Measurement) -> None:
        await super().verify(measurement)
        s, tally = self.settings, self.tally
        # counted again now: a duplicate delivered after the phase shows here
        assert tally.count == s.messages, f"{self.who}: {tally.count} messages"
        assert tally.size == s.messages * s.body_size, f"{self.who}: wrong bodies"
        assert tally.last_tag == s.messages, f"{self.who}: last tag {tally.last_tag}"
        if self.admin is not None:
            # a message left unacked would go back to the queue with the connection
            await self.connection.close()
            await asyncio.sleep(0.05)
            left = await self.admin.count(self.queue.name)
            assert left == 0, f"{self.who}: {left} messages back in the queue"
        else:
            acked = await self._fake_count(ACKS_QUEUE)
            assert acked == s.messages, f"{self.who}: the broker saw {acked} acks"


class Consume(_Consume):
    """``Queue.consume`` with an async callback that awaits ``message.ack()``."""

    name = "consume+ack"

    async def measure(self) -> Measurement:
        count = self.settings.messages
        done = asyncio.get_running_loop().create_future()
        tally = self.tally

        async def on_message(message: Any) -> None:
            await message.ack()
            self._count(message)
            if tally.count == count:
                done.set_result(None)

        meter = Meter()
        # a fixed tag: the fake broker encoded its delivery stream for it in advance
        await self.queue.consume(on_message, consumer_tag=CONSUMER_TAG)
        await asyncio.wait_for(done, WAIT)
        # a round trip on the channel: every ack has reached the broker
        await self.channel.set_qos(prefetch_count=self.settings.prefetch)
        return meter.stop(tally.count)


class Iterate(_Consume):
    """``async for`` over ``Queue.iterator()``, ``async with message.process()`` each."""

    name = "iterator+process"

    async def measure(self) -> Measurement:
        count = self.settings.messages
        tally = self.tally
        meter = Meter()
        async with asyncio.timeout(WAIT):  # a client that stops delivering fails, not hangs
            # the fixed tag as in Consume
            async with self.queue.iterator(consumer_tag=CONSUMER_TAG) as messages:
                async for message in messages:
                    async with message.process():
                        self._count(message)
                    if tally.count == count:
                        break
            # leaving the block cancelled the consumer, a round trip after the last ack
        return meter.stop(tally.count)


# each of them against the real broker, then against the fake one
_REAL = (Publish, PublishConfirmed, PublishConfirmedBatch, Consume, Iterate)
API_SCENARIOS: dict[str, type[ApiScenario]] = by_name(_REAL, _REAL)


class ApiRounds(Rounds):
    """client_runners' rounds (fresh loop each, median by CPU) over these scenarios."""

    scenarios = API_SCENARIOS
    clients = LIBS


# ------------------------------------------------------------ the table


def ratio(results: Results, scenario: str, loop: str) -> float | None:
    """aio-pika's CPU per message over amqpfast's."""
    fast = results.get((scenario, loop, "amqpfast"))
    other = results.get((scenario, loop, "aio-pika"))
    if fast is None or other is None or not fast.cpu:
        return None
    return other.cpu_us / fast.cpu_us


def table(results: Results, settings: Settings) -> list[str]:
    """Rate and CPU per message for both libraries, the ratio and the verdict."""
    lines = [
        f"{'':<22} {'':<7}" + "".join(f" | {name:^17}" for name in LIBS) + " | CPU ratio    |",
        f"{'scenario':<22} {'loop':<7}"
        + "".join(f" | {'msg/s':>9} {'µs/msg':>7}" for _ in LIBS)
        + f" | {'aio-pika/af':>12} | target >={TARGET}x",
    ]
    for scenario, loop in rows(results, API_SCENARIOS):
        cells = "".join(f" | {cell(results.get((scenario, loop, lib)))}" for lib in LIBS)
        value = ratio(results, scenario, loop)
        # rounded down, so that a ratio shown as 10.0x has met the target
        shown = f"{math.floor(value * 10) / 10:>11.1f}x" if value is not None else f"{'-':>12}"
        verdict = "" if value is None else "met" if value >= TARGET else "MISSED"
        lines.append(f"{scenario:<22} {loop:<7}{cells} | {shown} | {verdict}")
    lines.append(
        f"{settings.messages} messages of {settings.body_size} B per scenario; "
        f"confirm windows of {CONFIRM_WINDOW}; prefetch {settings.prefetch}; "
        f"median of {settings.rounds} rounds by CPU; CPU = user+sys of this process "
        f"(getrusage); codec {IMPLEMENTATION}; Python {sys.version.split()[0]}; "
        f"aio-pika {version('aio-pika')}, aiormq {version('aiormq')}, uvloop {version('uvloop')}"
    )
    real = [name for name in API_SCENARIOS if not API_SCENARIOS[name].fake]
    loops = sorted({loop for scenario, loop, _ in results if scenario in real})
    if loops:
        lines.append("")
        lines.extend(wakeup_table(results, real, floors(loops), "amqpfast", "aio-pika"))
    return lines


# ------------------------------------------------------------ the script


def main(argv: list[str] | None = None) -> int:
    return cli(argv, __doc__.split("\n")[0], ApiRounds, table, "lib")


if __name__ == "__main__":
    sys.exit(main())
