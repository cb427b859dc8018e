"""amqpfast's low-level API, aiormq and aio-pika through the same scenarios.

Every scenario prepares outside the measured phase (connections, queues,
pre-filled messages), measures wall time and this process's own CPU (user +
sys from getrusage) around the phase alone, and afterwards checks that the
phase really moved its messages, so a client that drops them fails instead of
posting a fast number. The broker runs in another process: the CPU measured
is the client's.

Each client's inner loop is written the way its users write it: one await per
publish, a coroutine callback per delivery, one ack per message.

Run without pytest (one table for everything, or a selection for profiling):
``.venv/bin/python benchmarks/client_runners.py [--loop uvloop] [--client amqpfast] [-k consume]``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, ClassVar

import aio_pika
import aiormq
import uvloop
from fake_broker import ACKS_QUEUE, CONTENT_TYPE, SINK_QUEUE, FakeBroker, delivery_queue
from pamqp import commands as spec

import amqpfast.core as amqpfast
from amqpfast.codec import IMPLEMENTATION, BasicProperties

CONSUMER_TAG = "bench.consumer"
QUEUE_PREFIX = "amqpfast-bench"
# a queue left behind by a crashed run disappears by itself after 10 minutes
QUEUE_ARGUMENTS = {"x-expires": 600_000}
WAIT = 120.0  # no phase of a healthy run comes close to this


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    """What every scenario moves; the environment can shrink it for a quick look."""

    url: str = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    messages: int = _env_int("AMQPFAST_BENCH_MESSAGES", 20_000)
    gets: int = _env_int("AMQPFAST_BENCH_GETS", 2_000)
    calls: int = _env_int("AMQPFAST_BENCH_CALLS", 2_000)
    rounds: int = _env_int("AMQPFAST_BENCH_ROUNDS", 3)
    window: int = 1_000  # publishes in flight with confirms
    prefetch: int = 1_000
    body_size: int = 64

    @property
    def body(self) -> bytes:
        return bytes(index % 256 for index in range(self.body_size))


# ------------------------------------------------------------ measuring


def _usage() -> tuple[float, int]:
    """This process's CPU seconds (user + sys) and how often it slept and was woken."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw


@dataclass(frozen=True)
class Measurement:
    """One measured phase: how many messages (or round trips), wall and CPU seconds.

    ``wakeups``: the voluntary context switches of the phase, the times the
    process waited for its socket (or anything else) and was woken again.
    """

    messages: int
    wall: float
    cpu: float
    wakeups: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.wall if self.wall else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.messages * 1e6 if self.messages else float("nan")


class Meter:
    """Wall and CPU time, and wakeups, from its creation to :meth:`stop`."""

    def __init__(self) -> None:
        self._wall = time.perf_counter()
        self._cpu, self._wakeups = _usage()

    def stop(self, messages: int) -> Measurement:
        cpu, wakeups = _usage()
        return Measurement(
            messages, time.perf_counter() - self._wall, cpu - self._cpu, wakeups - self._wakeups
        )


def count_acks(confirms: Iterable[Any]) -> int:
    return sum(1 for confirm in confirms if getattr(confirm, "name", "") == "Basic.Ack")


class Tally:
    """What a consumer received; the scenarios check it against what they expect."""

    def __init__(self) -> None:
        self.count = 0
        self.size = 0
        self.last_tag: int | None = 0


# ------------------------------------------------------------ the clients


class Client:
    """One client library behind the operations the scenarios need."""

    name: ClassVar[str]
    library: ClassVar[Any]  # the module whose connect() opens the connection
    connection: Any = None

    async def connect(self, url: str) -> None:
        self.connection = await self.library.connect(url)
        self.waiting: dict[str, asyncio.Future[bytes]] = {}

    async def close(self) -> None:
        """Close the connection (once; later calls do nothing)."""
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()

    async def channel(self, confirms: bool) -> Any:
        return await self.connection.channel(publisher_confirms=confirms)

    async def qos(self, channel: Any, prefetch: int) -> None:
        """Basic.Qos; also the synchronous round trip that ends a phase."""
        raise NotImplementedError

    async def message_count(self, channel: Any, queue: str) -> int:
        raise NotImplementedError

    async def exclusive_queue(self, channel: Any) -> str:
        raise NotImplementedError

    async def publish(self, channel: Any, queue: str, body: bytes, count: int) -> int:
        """``count`` publishes, one after the other; returns how many went out."""
        raise NotImplementedError

    async def publish_confirmed(
        self, channel: Any, queue: str, body: bytes, count: int, window: int
    ) -> int:
        """Publishes in flight ``window`` at a time; returns how many were acked."""
        raise NotImplementedError

    async def consume(self, channel: Any, queue: str, count: int, ack: bool) -> Tally:
        """Consume until ``count`` messages came (acking each one with ``ack``)."""
        raise NotImplementedError

    async def get(self, channel: Any, queue: str, count: int) -> Tally:
        raise NotImplementedError

    async def serve_rpc(self, channel: Any, queue: str) -> None:
        """Answer each request on ``queue`` to its reply_to with its correlation_id."""
        raise NotImplementedError

    async def listen_rpc(self, channel: Any, reply_queue: str) -> None:
        raise NotImplementedError

    async def call_rpc(
        self, channel: Any, queue: str, reply_queue: str, body: bytes, count: int
    ) -> int:
        """``count`` requests, each awaiting its reply; returns the right replies."""
        raise NotImplementedError


class _ChannelClient(Client):
    """The methods amqpfast's low-level channel and aiormq's spell the same way."""

    properties: ClassVar[Any]  # the class of a message's properties

    async def qos(self, channel: Any, prefetch: int) -> None:
        await channel.basic_qos(prefetch_count=prefetch)

    async def message_count(self, channel: Any, queue: str) -> int:
        return int((await channel.queue_declare(queue, passive=True)).message_count)

    async def exclusive_queue(self, channel: Any) -> str:
        return str((await channel.queue_declare("", exclusive=True)).queue)

    async def publish(self, channel: Any, queue: str, body: bytes, count: int) -> int:
        for _ in range(count):
            await channel.basic_publish(body, routing_key=queue)
        return count

    async def publish_confirmed(
        self, channel: Any, queue: str, body: bytes, count: int, window: int
    ) -> int:
        acked = 0
        for start in range(0, count, window):
            confirms = await asyncio.gather(
                *[
                    channel.basic_publish(body, routing_key=queue)
                    for _ in range(min(window, count - start))
                ]
            )
            acked += count_acks(confirms)
        return acked

    async def call_rpc(
        self, channel: Any, queue: str, reply_queue: str, body: bytes, count: int
    ) -> int:
        loop = asyncio.get_running_loop()
        properties = self.properties
        right = 0
        for number in range(count):
            correlation_id = str(number)
            future = self.waiting[correlation_id] = loop.create_future()
            await channel.basic_publish(
                body,
                routing_key=queue,
                properties=properties(reply_to=reply_queue, correlation_id=correlation_id),
            )
            if await future == body:
                right += 1
        return right


class AmqpfastClient(_ChannelClient):
    name = "amqpfast"
    library = amqpfast
    properties = BasicProperties

    async def consume(self, channel: Any, queue: str, count: int, ack: bool) -> Tally:
        done = asyncio.get_running_loop().create_future()
        tally = Tally()

        async def on_message(message: amqpfast.DeliveredMessage) -> None:
            if ack:
                await channel.basic_ack(message.delivery_tag)
            tally.count += 1
            tally.size += len(message.body)
            tally.last_tag = message.delivery_tag
            if tally.count == count:
                done.set_result(None)

        await channel.basic_consume(queue, on_message, no_ack=not ack, consumer_tag=CONSUMER_TAG)
        await asyncio.wait_for(done, WAIT)
        return tally

    async def get(self, channel: Any, queue: str, count: int) -> Tally:
        tally = Tally()
        for _ in range(count):
            message = await channel.basic_get(queue, no_ack=True)
            if message.delivery_tag is not None:
                tally.count += 1
                tally.size += len(message.body)
        return tally

    async def serve_rpc(self, channel: Any, queue: str) -> None:
        async def on_request(message: amqpfast.DeliveredMessage) -> None:
            request = message.properties
            await channel.basic_publish(
                message.body,
                routing_key=request.reply_to,
                properties=BasicProperties(correlation_id=request.correlation_id),
            )

        await channel.basic_consume(queue, on_request, no_ack=True)

    async def listen_rpc(self, channel: Any, reply_queue: str) -> None:
        waiting = self.waiting

        async def on_reply(message: amqpfast.DeliveredMessage) -> None:
            future = waiting.pop(message.properties.correlation_id, None)
            if future is not None:
                future.set_result(message.body)

        await channel.basic_consume(reply_queue, on_reply, no_ack=True)


class AiormqClient(_ChannelClient):
    name = "aiormq"
    library = aiormq
    properties = spec.Basic.Properties

    async def consume(self, channel: Any, queue: str, count: int, ack: bool) -> Tally:
        done = asyncio.get_running_loop().create_future()
        tally = Tally()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            if ack:
                await channel.basic_ack(message.delivery.delivery_tag)  # type: ignore[union-attr]
            tally.count += 1
            tally.size += len(message.body)
            tally.last_tag = message.delivery.delivery_tag  # type: ignore[union-attr]
            if tally.count == count:
                done.set_result(None)

        await channel.basic_consume(queue, on_message, no_ack=not ack, consumer_tag=CONSUMER_TAG)
        await asyncio.wait_for(done, WAIT)
        return tally

    async def get(self, channel: Any, queue: str, count: int) -> Tally:
        tally = Tally()
        for _ in range(count):
            message = await channel.basic_get(queue, no_ack=True)
            if isinstance(message.delivery, spec.Basic.GetOk):
                tally.count += 1
                tally.size += len(message.body)
        return tally

    async def serve_rpc(self, channel: Any, queue: str) -> None:
        async def on_request(message: aiormq.abc.DeliveredMessage) -> None:
            request = message.header.properties
            await channel.basic_publish(
                message.body,
                routing_key=request.reply_to,
                properties=spec.Basic.Properties(correlation_id=request.correlation_id),
            )

        await channel.basic_consume(queue, on_request, no_ack=True)

    async def listen_rpc(self, channel: Any, reply_queue: str) -> None:
        waiting = self.waiting

        async def on_reply(message: aiormq.abc.DeliveredMessage) -> None:
            future = waiting.pop(message.header.properties.correlation_id or "", None)
            if future is not None:
                future.set_result(message.body)

        await channel.basic_consume(reply_queue, on_reply, no_ack=True)


class AioPikaClient(Client):
    name = "aio-pika"
    library = aio_pika

    async def qos(self, channel: Any, prefetch: int) -> None:
        await channel.set_qos(prefetch_count=prefetch)

    async def message_count(self, channel: Any, queue: str) -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count)

    async def exclusive_queue(self, channel: Any) -> str:
        return str((await channel.declare_queue(exclusive=True)).name)

    async def publish(self, channel: Any, queue: str, body: bytes, count: int) -> int:
        exchange = channel.default_exchange
        for _ in range(count):
            await exchange.publish(aio_pika.Message(body), routing_key=queue)
        return count

    async def publish_confirmed(
        self, channel: Any, queue: str, body: bytes, count: int, window: int
    ) -> int:
        exchange = channel.default_exchange
        acked = 0
        for start in range(0, count, window):
            confirms = await asyncio.gather(
                *[
                    exchange.publish(aio_pika.Message(body), routing_key=queue)
                    for _ in range(min(window, count - start))
                ]
            )
            acked += count_acks(confirms)
        return acked

    async def consume(self, channel: Any, queue: str, count: int, ack: bool) -> Tally:
        done = asyncio.get_running_loop().create_future()
        tally = Tally()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if ack:
                await message.ack()
            tally.count += 1
            tally.size += len(message.body)
            tally.last_tag = message.delivery_tag
            if tally.count == count:
                done.set_result(None)

        source = await channel.get_queue(queue, ensure=False)
        await source.consume(on_message, no_ack=not ack, consumer_tag=CONSUMER_TAG)
        await asyncio.wait_for(done, WAIT)
        return tally

    async def get(self, channel: Any, queue: str, count: int) -> Tally:
        source = await channel.get_queue(queue, ensure=False)
        tally = Tally()
        for _ in range(count):
            message = await source.get(no_ack=True, fail=False)
            if message is not None:
                tally.count += 1
                tally.size += len(message.body)
        return tally

    async def serve_rpc(self, channel: Any, queue: str) -> None:
        exchange = channel.default_exchange

        async def on_request(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await exchange.publish(
                aio_pika.Message(message.body, correlation_id=message.correlation_id),
                routing_key=message.reply_to or "",
            )

        source = await channel.get_queue(queue, ensure=False)
        await source.consume(on_request, no_ack=True)

    async def listen_rpc(self, channel: Any, reply_queue: str) -> None:
        waiting = self.waiting

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            future = waiting.pop(message.correlation_id or "", None)
            if future is not None:
                future.set_result(message.body)

        source = await channel.get_queue(reply_queue, ensure=False)
        await source.consume(on_reply, no_ack=True)

    async def call_rpc(
        self, channel: Any, queue: str, reply_queue: str, body: bytes, count: int
    ) -> int:
        loop = asyncio.get_running_loop()
        exchange = channel.default_exchange
        right = 0
        for number in range(count):
            correlation_id = str(number)
            future = self.waiting[correlation_id] = loop.create_future()
            await exchange.publish(
                aio_pika.Message(body, reply_to=reply_queue, correlation_id=correlation_id),
                routing_key=queue,
            )
            if await future == body:
                right += 1
        return right


CLIENTS: dict[str, type[Client]] = {
    client.name: client for client in (AmqpfastClient, AiormqClient, AioPikaClient)
}
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


# ------------------------------------------------------------ the real broker's helper


class Admin:
    """An amqpfast connection outside the measured phase: queues, pre-filling, counting."""

    async def open(self, url: str) -> Admin:
        self.connection = await amqpfast.connect(url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.queues: list[str] = []
        return self

    async def declare(self, purpose: str) -> str:
        name = f"{QUEUE_PREFIX}.{purpose}.{uuid.uuid4().hex[:12]}"
        await self.channel.queue_declare(name, arguments=QUEUE_ARGUMENTS)
        self.queues.append(name)
        return name

    async def fill(self, queue: str, body: bytes, count: int, window: int) -> None:
        properties = BasicProperties(content_type=CONTENT_TYPE)
        for start in range(0, count, window):
            await asyncio.gather(
                *[
                    self.channel.basic_publish(body, routing_key=queue, properties=properties)
                    for _ in range(min(window, count - start))
                ]
            )
        await self.wait_count(queue, count)

    async def count(self, queue: str) -> int:
        declared = await self.channel.queue_declare(queue, passive=True)
        return declared.message_count or 0

    async def wait_count(self, queue: str, expected: int, timeout: float = 30.0) -> int:
        """The queue's ready messages once they reach ``expected`` (or after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            count = await self.count(queue)
            if count >= expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for queue in self.queues:
            if not self.channel.is_closed:
                await self.channel.queue_delete(queue)
        await self.connection.close()


# ------------------------------------------------------------ scenarios


class Scenario:
    """setup, then the measured phase, then the checks, then teardown."""

    name: ClassVar[str]
    fake: ClassVar[bool] = False

    def __init__(self, client: type[Client], settings: Settings, url: str) -> None:
        self.client = client()
        self.settings = settings
        self.url = url
        self.admin: Admin | None = None
        self.extra: list[Client] = []
        self.channel: Any = None

    @property
    def expected(self) -> int:
        return self.settings.messages

    async def setup(self) -> None:
        if not self.fake:
            self.admin = await Admin().open(self.url)
        await self.client.connect(self.url)

    async def measure(self) -> Measurement:
        raise NotImplementedError

    async def verify(self, measurement: Measurement) -> None:
        assert measurement.messages == self.expected, (
            f"{self.client.name}: {measurement.messages} of {self.expected}"
        )

    async def teardown(self) -> None:
        for client in [self.client, *self.extra]:
            await client.close()
        if self.admin is not None:
            await self.admin.close()


class _Publish(Scenario):
    confirms: ClassVar[bool] = False

    async def setup(self) -> None:
        await super().setup()
        if self.admin is not None:
            self.queue = await self.admin.declare(self.name)
        else:
            self.queue = SINK_QUEUE
        self.channel = await self.client.channel(self.confirms)

    async def measure(self) -> Measurement:
        s = self.settings
        meter = Meter()
        if self.confirms:
            done = await self.client.publish_confirmed(
                self.channel, self.queue, s.body, s.messages, s.window
            )
        else:
            done = await self.client.publish(self.channel, self.queue, s.body, s.messages)
            # a round trip on the channel: every publish has left the client
            await self.client.qos(self.channel, 0)
        return meter.stop(done)

    async def verify(self, measurement: Measurement) -> None:
        await super().verify(measurement)
        if self.admin is not None:
            arrived = await self.admin.wait_count(self.queue, self.expected)
        else:
            arrived = await self.client.message_count(self.channel, SINK_QUEUE)
        assert arrived == self.expected, f"{self.client.name}: {arrived} arrived"


class PublishPlain(_Publish):
    name = "publish"


class PublishConfirmed(_Publish):
    name = "publish+confirm"
    confirms = True


class _Consume(Scenario):
    ack: ClassVar[bool] = False

    async def setup(self) -> None:
        await super().setup()
        s = self.settings
        if self.admin is not None:
            self.queue = await self.admin.declare(self.name)
            await self.admin.fill(self.queue, s.body, s.messages, s.window)
        else:
            self.queue = delivery_queue(s.messages)
        self.channel = await self.client.channel(False)
        if self.ack:
            await self.client.qos(self.channel, s.prefetch)

    async def measure(self) -> Measurement:
        s = self.settings
        meter = Meter()
        self.tally = await self.client.consume(self.channel, self.queue, s.messages, self.ack)
        if self.ack:
            # a round trip on the channel: every ack has reached the broker
            await self.client.qos(self.channel, s.prefetch)
        return meter.stop(self.tally.count)

    async def verify(self, measurement: Measurement) -> None:
        await super().verify(measurement)
        s = self.settings
        tally = self.tally
        assert tally.size == s.messages * s.body_size, f"{self.client.name}: wrong bodies"
        assert tally.last_tag == s.messages, f"{self.client.name}: last tag {tally.last_tag}"
        if self.admin is not None:
            # a message left unacked would go back to the queue with the connection
            await self.client.close()
            await asyncio.sleep(0.05)
            left = await self.admin.count(self.queue)
            assert left == 0, f"{self.client.name}: {left} messages back in the queue"
        elif self.ack:
            acked = await self.client.message_count(self.channel, ACKS_QUEUE)
            assert acked == s.messages, f"{self.client.name}: the broker saw {acked} acks"


class ConsumeNoAck(_Consume):
    name = "consume"


class ConsumeAck(_Consume):
    name = "consume+ack"
    ack = True


class Get(Scenario):
    name = "basic_get"

    @property
    def expected(self) -> int:
        return self.settings.gets

    async def setup(self) -> None:
        await super().setup()
        assert self.admin is not None
        s = self.settings
        self.queue = await self.admin.declare(self.name)
        await self.admin.fill(self.queue, s.body, s.gets, s.window)
        self.channel = await self.client.channel(False)

    async def measure(self) -> Measurement:
        meter = Meter()
        self.tally = await self.client.get(self.channel, self.queue, self.settings.gets)
        return meter.stop(self.tally.count)

    async def verify(self, measurement: Measurement) -> None:
        await super().verify(measurement)
        assert self.tally.size == self.settings.gets * self.settings.body_size
        assert self.admin is not None
        assert await self.admin.count(self.queue) == 0


class Rpc(Scenario):
    """Sequential request/reply; both ends are the client under test, in this process."""

    name = "rpc"

    @property
    def expected(self) -> int:
        return self.settings.calls

    async def setup(self) -> None:
        await super().setup()
        assert self.admin is not None
        self.queue = await self.admin.declare(self.name)
        server = self.client.__class__()
        self.extra.append(server)
        await server.connect(self.url)
        await server.serve_rpc(await server.channel(False), self.queue)
        self.channel = await self.client.channel(False)
        self.reply_queue = await self.client.exclusive_queue(self.channel)
        await self.client.listen_rpc(self.channel, self.reply_queue)

    async def measure(self) -> Measurement:
        s = self.settings
        meter = Meter()
        async with asyncio.timeout(WAIT):  # one timer for the phase, not one per call
            right = await self.client.call_rpc(
                self.channel, self.queue, self.reply_queue, s.body, s.calls
            )
        return meter.stop(right)


def fake_variant(scenario: type[Any]) -> type[Any]:
    """``scenario`` against the fake broker: ``Fake<class>``, named ``fake <name>``."""
    return type(
        f"Fake{scenario.__name__}",
        (scenario,),
        {"name": f"fake {scenario.name}", "fake": True, "__module__": scenario.__module__},
    )


def by_name(real: Iterable[type[Any]], faked: Iterable[type[Any]]) -> dict[str, type[Any]]:
    """The scenarios by name: ``real`` as they are, then ``faked`` against the fake broker."""
    scenarios = [*real, *map(fake_variant, faked)]
    return {scenario.name: scenario for scenario in scenarios}


SCENARIOS: dict[str, type[Scenario]] = by_name(
    (PublishPlain, PublishConfirmed, ConsumeNoAck, ConsumeAck, Get, Rpc),
    (ConsumeNoAck, ConsumeAck, PublishPlain, PublishConfirmed),
)

# amqpfast's CPU per message must be this many times below aiormq's (same run, same loop)
TARGETS = {"publish": 10, "consume": 10, "publish+confirm": 5, "consume+ack": 5}
TARGET_US = 3.0  # and at most this many µs per message on uvloop


def fake_broker(settings: Settings) -> FakeBroker:
    """The fake broker for these settings, its delivery stream encoded in advance."""
    warm = [(1, delivery_queue(settings.messages), CONSUMER_TAG)]
    return FakeBroker(settings.body, warm)


class Rounds:
    """One scenario for one client, round after round, each on a fresh loop.

    Every round has its own connections and queues. pytest-benchmark drives it
    as pedantic's setup, target and teardown; :meth:`run` does the same without.
    """

    # what the names given to __init__ mean; api_runners.py reuses this class with its own
    scenarios: ClassVar[dict[str, Any]] = SCENARIOS
    clients: ClassVar[dict[str, Any]] = CLIENTS

    def __init__(self, scenario: str, client: str, loop: str, settings: Settings, url: str):
        self.scenario = self.scenarios[scenario]
        self.client = self.clients[client]
        self.loop = LOOPS[loop]
        self.settings = settings
        self.url = url
        self.measurements: list[Measurement] = []
        self._runner: asyncio.Runner | None = None
        self._case: Any = None  # a Scenario (or api_runners' ApiScenario)
        self._measured: Measurement | None = None

    def setup(self) -> None:
        self.teardown()
        self._runner = asyncio.Runner(loop_factory=self.loop)
        self._case = self.scenario(self.client, self.settings, self.url)
        try:
            self._runner.run(self._case.setup())
        except BaseException:
            self.teardown()
            raise
        gc.collect()  # the setup's garbage is not the measured phase's to collect

    def measure(self) -> Measurement:
        assert self._runner is not None and self._case is not None, "setup() first"
        self._measured = self._runner.run(self._case.measure())
        return self._measured

    def teardown(self) -> None:
        """Check the round that ran, then close what it opened (once)."""
        runner, case, measured = self._runner, self._case, self._measured
        self._runner = self._case = self._measured = None
        if runner is None or case is None:
            return
        try:
            if measured is not None:
                runner.run(case.verify(measured))
                self.measurements.append(measured)
        finally:
            try:
                runner.run(case.teardown())
            finally:
                runner.close()

    def run(self, rounds: int) -> Measurement:
        for _ in range(rounds):
            self.setup()
            try:
                self.measure()
            finally:
                self.teardown()
        return self.result

    @property
    def result(self) -> Measurement:
        """The median round by CPU per message: one slow or lucky round does not decide."""
        ranked = sorted(self.measurements, key=lambda measured: measured.cpu_us)
        return ranked[(len(ranked) - 1) // 2]


# ------------------------------------------------------------ the table

Results = dict[tuple[str, str, str], Measurement]  # (scenario, loop, client) -> measured


def cell(measurement: Measurement | None) -> str:
    if measurement is None:
        return f"{'-':>9} {'-':>7}"
    return f"{measurement.rate:>9,.0f} {measurement.cpu_us:>7.2f}"


def _ratio(results: Results, key: tuple[str, str], client: str) -> float | None:
    fast = results.get((*key, "amqpfast"))
    other = results.get((*key, client))
    if fast is None or other is None or not fast.cpu:
        return None
    return other.cpu_us / fast.cpu_us


def table(results: Results, settings: Settings) -> list[str]:
    """The side-by-side table: rate and CPU per message, and the CPU ratios."""
    clients = list(CLIENTS)
    lines = [
        f"{'':<21} {'':<7}"
        + "".join(f" | {name:^17}" for name in clients)
        + " | CPU ratio vs amqpfast | target",
        f"{'scenario':<21} {'loop':<7}"
        + "".join(f" | {'msg/s':>9} {'µs/msg':>7}" for _ in clients)
        + f" | {'aiormq':>9} {'aio-pika':>9}   |",
    ]
    for scenario, loop in rows(results, SCENARIOS):
        cells = "".join(f" | {cell(results.get((scenario, loop, c)))}" for c in clients)
        ratios = []
        for client in ("aiormq", "aio-pika"):
            ratio = _ratio(results, (scenario, loop), client)
            ratios.append(f"{ratio:>8.1f}x" if ratio is not None else f"{'-':>9}")
        lines.append(
            f"{scenario:<21} {loop:<7}{cells} | {ratios[0]} {ratios[1]}   | "
            + _verdict(results, scenario, loop)
        )
    lines.append(
        f"{settings.messages} messages of {settings.body_size} B per scenario "
        f"({settings.gets} for basic_get, {settings.calls} round trips for rpc, µs per call); "
        f"median of {settings.rounds} rounds by CPU; "
        f"CPU = user+sys of this process (getrusage); codec {IMPLEMENTATION}; "
        f"Python {sys.version.split()[0]}; aiormq {version('aiormq')}, "
        f"aio-pika {version('aio-pika')}, uvloop {version('uvloop')}"
    )
    return lines


def rows(results: Results, scenarios: Iterable[str]) -> list[tuple[str, str]]:
    """The table's (scenario, loop) rows: scenarios in their order, each on every loop."""
    names, loops = list(scenarios), list(LOOPS)

    def order(row: tuple[str, str]) -> tuple[int, int]:
        return (names.index(row[0]) if row[0] in names else len(names), loops.index(row[1]))

    return sorted({(scenario, loop) for scenario, loop, _ in results}, key=order)


def _verdict(results: Results, scenario: str, loop: str) -> str:
    base = scenario.removeprefix("fake ")
    needed = TARGETS.get(base)
    if needed is None:
        return ""
    ratio = _ratio(results, (scenario, loop), "aiormq")
    if ratio is None:
        return f">={needed}x"
    verdict = f">={needed}x {'met' if ratio >= needed else 'MISSED'}"
    fast = results.get((scenario, loop, "amqpfast"))
    if loop == "uvloop" and fast is not None:
        verdict += f", {'<=' if fast.cpu_us <= TARGET_US else '>'}{TARGET_US:g} µs"
    return verdict


# ------------------------------------------------------------ the script


def cli(
    argv: list[str] | None,
    description: str,
    rounds: type[Rounds],
    table: Callable[[Results, Settings], list[str]],
    member: str,
) -> int:
    """Run every case selected on the command line, then print the table.

    ``rounds`` gives the scenarios and the clients (or libraries) by name;
    ``member`` is the option that selects the latter (``client``, ``lib``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--loop", action="append", choices=list(LOOPS))
    parser.add_argument(
        f"--{member}", dest="members", action="append", choices=list(rounds.clients)
    )
    parser.add_argument("-k", dest="match", default="", help="scenarios whose name contains it")
    options = parser.parse_args(argv)
    settings = Settings()
    results: Results = {}
    scenarios = [name for name in rounds.scenarios if options.match in name]
    width = max(map(len, rounds.scenarios)) + 1  # the table's scenario column
    with fake_broker(settings) as broker:
        for loop in options.loop or list(LOOPS):
            for scenario in scenarios:
                url = broker.url if rounds.scenarios[scenario].fake else settings.url
                for name in options.members or list(rounds.clients):
                    measured = rounds(scenario, name, loop, settings, url).run(settings.rounds)
                    results[(scenario, loop, name)] = measured
                    print(
                        f"{scenario:<{width}} {loop:<7} {name:<8} {cell(measured)}",
                        file=sys.stderr,
                        flush=True,
                    )
    print("\n".join(table(results, settings)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(argv, __doc__.split("\n")[0], Rounds, table, "client")


if __name__ == "__main__":
    sys.exit(main())
