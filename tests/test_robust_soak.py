"""Soak tests of connect_robust: repeated kills, stalls and awkward closes, measured.

Each test runs on one event loop only (they are long); together they take
about 90 s on a 2-core machine, most of it waiting for rabbitmqctl. With
``AMQPFAST_RELIABILITY_OUT`` naming a file, each test merges its figures into
that JSON file (scripts/reliability.py writes RELIABILITY.md from it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import random
import statistics
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import unquote

import pytest
from broker_tools import (
    TCPProxy,
    close_connections_named,
    connections_named,
    loop_exception_log,
    rabbitmqctl,
)
from pamqp import commands as spec

import amqpfast
from amqpfast import DeliveryMode, IncomingMessage, Message, RobustConnection
from amqpfast.exceptions import AMQPChannelError, AMQPError, ChannelNotFoundEntity

pytestmark = [pytest.mark.broker, pytest.mark.slow]

OUT_ENV = "AMQPFAST_RELIABILITY_OUT"


def one_loop(preferred: str) -> pytest.MarkDecorator:
    """Run a test on one loop only (uvloop where asked and installed, else asyncio)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        preferred = "asyncio"
    return pytest.mark.asyncio(loop_factories=[preferred])


def loop_name() -> str:
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


def record(section: str, figures: dict[str, Any]) -> None:
    """Merge one test's figures into the JSON file named by AMQPFAST_RELIABILITY_OUT."""
    print(f"\n{section}: {json.dumps(figures, sort_keys=True)}")
    path = os.environ.get(OUT_ENV)
    if not path:
        return
    data: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError), open(path) as file:
        data = json.load(file)
    data[section] = figures
    with open(path, "w") as file:
        json.dump(data, file, indent=2, sort_keys=True)


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50, p95 and max of some durations, in seconds (rounded to the millisecond)."""
    if not samples:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(p95, 3),
        "max": round(ordered[-1], 3),
    }


def vhost_of(amqp_url: str) -> str:
    return unquote(amqp_url.rsplit("/", 1)[1])


def robust_url(amqp_url: str, name: str, **options: object) -> str:
    # a short interval: a soak should spend its time on kills, not on waiting
    options = {"reconnect_interval": 0.1, "name": name, **options}
    return f"{amqp_url}?" + "&".join(f"{key}={value}" for key, value in options.items())


def other_tasks() -> list[asyncio.Task[Any]]:
    """The tasks still alive besides this test's own and the proxy fixture's."""
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task is not current
        and not task.done()
        and not getattr(task.get_coro(), "__qualname__", "").startswith("TCPProxy.")
    ]


class RecoveryClock:
    """Times each outage of a robust connection: from the loss the client saw to the restore.

    The loss is the moment the low-level connection's ``closing`` finishes;
    the restore is the call of ``reconnect_callbacks`` (after the topology
    and the consumers are back).
    """

    def __init__(self, connection: RobustConnection) -> None:
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.lost_at: float | None = None
        self.losses = 0
        self.reconnects = 0
        self.durations: list[float] = []
        self._changed = asyncio.Event()
        connection.reconnect_callbacks.add(self._on_reconnect)
        self._watch()

    def _watch(self) -> None:
        self.connection.transport.connection.closing.add_done_callback(self._on_lost)

    def _on_lost(self, closing: asyncio.Future[None]) -> None:
        if not closing.cancelled():
            closing.exception()  # retrieved: a kill is expected here
        if self.lost_at is None:
            self.lost_at = self.loop.time()
            self.losses += 1
        self._changed.set()

    def _on_reconnect(self, _connection: object) -> None:
        if self.lost_at is not None:
            self.durations.append(round(self.loop.time() - self.lost_at, 4))
        self.lost_at = None
        self.reconnects += 1
        self._watch()
        self._changed.set()

    async def wait_reconnects(self, count: int, timeout: float = 20) -> None:
        """Wait until the connection was restored ``count`` times in all."""
        async with asyncio.timeout(timeout):
            while self.reconnects < count:
                self._changed.clear()
                await self._changed.wait()

    def detach(self) -> None:
        self.connection.reconnect_callbacks.discard(self._on_reconnect)


async def channel_back(channel: amqpfast.RobustChannel, timeout: float = 30) -> None:
    """Wait until a robust channel is open again.

    ready() can return at once when the loss is not processed yet, so the
    state is checked too.
    """
    async with asyncio.timeout(timeout):
        while True:
            await channel.ready()
            if not channel.is_closed:
                return
            await asyncio.sleep(0.01)


def kill_repeatedly(
    name: str, kills: int, pause: tuple[float, float], stop: threading.Event, seed: int
) -> dict[str, Any]:
    """Close the connection ``name`` ``kills`` times, a random pause apart (runs in a thread)."""
    rng = random.Random(seed)
    done = 0
    misses = 0
    most = 0
    deadline = time.monotonic() + 120
    while done < kills and not stop.is_set() and time.monotonic() < deadline:
        if stop.wait(rng.uniform(*pause)):
            break
        closed = close_connections_named(name, "soak test kill")
        most = max(most, closed)
        if closed:
            done += 1
        else:  # caught it while it was reconnecting: try again
            misses += 1
    return {"kills": done, "misses": misses, "most_connections_seen": most}


# ---------------------------------------------------------------- 1. confirmed publishing

MIN_MESSAGES = 20_000
PUBLISH_KILLS = 10
# Publishing is paced below what the broker takes so that the kills
# (about 2 s each: rabbitmqctl runs twice) fall among the messages.
PUBLISH_RATE = 1_000
PUBLISHERS = 50
BODY_SIZE = 64


class Pacer:
    """Hands out publish slots at a fixed rate."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate
        self.loop = asyncio.get_running_loop()
        self.next = self.loop.time()

    async def wait(self) -> None:
        now = self.loop.time()
        slot = max(self.next, now)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@one_loop("uvloop")
async def test_confirmed_publishing_loses_nothing_through_kills(amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(amqp_url, unique), timeout=10)
    clock = RecoveryClock(connection)
    stop_killing = threading.Event()
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.confirmed", durable=True)
        exchange = channel.default_exchange
        next_id = 0
        attempts = 0
        errors: collections.Counter[str] = collections.Counter()
        returned = 0
        pacer = Pacer(PUBLISH_RATE)
        killing = asyncio.ensure_future(
            asyncio.to_thread(
                kill_repeatedly, unique, PUBLISH_KILLS, (0.1, 0.5), stop_killing, 20_000
            )
        )

        def take_id() -> int | None:
            nonlocal next_id
            if next_id >= MIN_MESSAGES and killing.done():
                return None
            next_id += 1
            return next_id - 1

        async def publish_until_confirmed(number: int) -> None:
            nonlocal attempts, returned
            message_id = f"m-{number}"
            body = message_id.encode().ljust(BODY_SIZE, b".")
            while True:
                attempts += 1
                message = Message(
                    body, message_id=message_id, delivery_mode=DeliveryMode.PERSISTENT
                )
                try:
                    result = await exchange.publish(message, queue.name, timeout=10)
                except (AMQPError, TimeoutError) as error:
                    # not confirmed: it may or may not be in the queue, so publish again
                    errors[type(error).__name__] += 1
                    await channel_back(channel)
                    continue
                if isinstance(result, spec.Basic.Ack):
                    return
                returned += 1  # came back unroutable: the queue is not there yet
                await asyncio.sleep(0.05)

        async def publisher() -> None:
            while (number := take_id()) is not None:
                await pacer.wait()
                await publish_until_confirmed(number)

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(publisher() for _ in range(PUBLISHERS))), 150)
        publish_seconds = time.monotonic() - started
        killed = await asyncio.wait_for(killing, 10)
        assert killed["kills"] >= PUBLISH_KILLS, killed
        assert killed["most_connections_seen"] == 1  # never a second connection

        # Drain the queue on a connection of its own and count the message ids.
        seen: collections.Counter[str] = collections.Counter()
        async with await amqpfast.connect(amqp_url, timeout=10) as reader:
            reading = await reader.channel()
            await reading.set_qos(prefetch_count=1000)
            ready = await reading.declare_queue(queue.name, passive=True)
            in_queue = ready.declaration_result.message_count
            all_read = asyncio.Event()
            read = 0

            def on_message(message: IncomingMessage) -> None:
                nonlocal read
                seen[message.message_id] += 1
                read += 1
                if read >= in_queue:
                    all_read.set()

            await ready.consume(on_message, no_ack=True)
            await asyncio.wait_for(all_read.wait(), 60)
            await reading.queue_delete(queue.name)

        published = next_id
        missing = [number for number in range(published) if seen[f"m-{number}"] == 0]
        duplicates = sum(seen.values()) - len(seen)
        record(
            "publish",
            {
                "loop": loop_name(),
                "messages": published,
                "body_bytes": BODY_SIZE,
                "publish_attempts": attempts,
                "publish_errors": dict(errors),
                "returned": returned,
                "kills": killed["kills"],
                "kill_misses": killed["misses"],
                "reconnects": clock.reconnects,
                "in_queue": in_queue,
                "lost": len(missing),
                "duplicates": duplicates,
                "publish_seconds": round(publish_seconds, 1),
                "recovery_seconds": clock.durations,
                "recovery": percentiles(clock.durations),
            },
        )
        assert missing == []
        assert set(seen) == {f"m-{number}" for number in range(published)}
        assert sum(errors.values()) > 0  # the kills did meet the publishers
    finally:
        stop_killing.set()
        clock.detach()
        await asyncio.wait_for(connection.close(), 10)


# ---------------------------------------------------------------- 2. consumers come back

CONSUMER_KILLS = 20


def tab_rows(listing: str) -> list[list[str]]:
    return [line.split("\t") for line in listing.splitlines() if "\t" in line]


def list_consumers(vhost: str) -> list[tuple[str, str]]:
    """(queue name, consumer tag) of every consumer in the vhost, sorted."""
    listing = rabbitmqctl("list_consumers", "-p", vhost, "queue_name", "consumer_tag", "-q")
    return sorted((row[0], row[1]) for row in tab_rows(listing) if row[0] != "queue_name")


def broker_view(vhost: str, name: str) -> dict[str, Any]:
    """Consumer counts (list_queues), consumers (list_consumers), our connections' pids.

    The three rabbitmqctl calls run side by side: each spends most of its
    second starting a VM.
    """

    def queues() -> dict[str, int]:
        listing = rabbitmqctl("list_queues", "-p", vhost, "name", "consumers", "-q")
        return {row[0]: int(row[1]) for row in tab_rows(listing) if row[1].isdigit()}

    with ThreadPoolExecutor(3) as pool:
        counts = pool.submit(queues)
        listed = pool.submit(list_consumers, vhost)
        pids = pool.submit(connections_named, name)
        return {"counts": counts.result(), "consumers": listed.result(), "pids": pids.result()}


@one_loop("asyncio")
async def test_consumers_come_back_after_every_kill(amqp_url, unique):
    vhost = vhost_of(amqp_url)
    connection = await amqpfast.connect_robust(robust_url(amqp_url, unique), timeout=10)
    clock = RecoveryClock(connection)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        queues = {
            "classic": await channel.declare_queue(f"{unique}.classic", durable=True),
            "server-named": await channel.declare_queue(exclusive=True),
            "quorum": await channel.declare_queue(
                f"{unique}.quorum", durable=True, arguments={"x-queue-type": "quorum"}
            ),
        }
        received: dict[str, list[str]] = {kind: [] for kind in queues}
        arrived = asyncio.Event()

        def consumer(kind: str) -> Callable[[IncomingMessage], Any]:
            async def on_message(message: IncomingMessage) -> None:
                async with message.process():
                    received[kind].append(message.body.decode())
                arrived.set()

            return on_message

        tags = {kind: await queue.consume(consumer(kind)) for kind, queue in queues.items()}

        view = await asyncio.to_thread(broker_view, vhost, unique)
        server_names = [queues["server-named"].name]
        quorum_count_lagging = 0
        for cycle in range(CONSUMER_KILLS):
            # the pid comes from the last view (listed beside the queues): one
            # rabbitmqctl run less per cycle than close_connections_named
            assert len(view["pids"]) == 1, f"cycle {cycle}: connections {view['pids']}"
            await asyncio.to_thread(rabbitmqctl, "close_connection", view["pids"][0], "soak kill")
            await clock.wait_reconnects(cycle + 1)

            # deliveries resume on each queue
            body = f"cycle-{cycle}"
            for queue in queues.values():
                await channel.default_exchange.publish(Message(body.encode()), queue.name)
            async with asyncio.timeout(10):
                while not all(body in bodies for bodies in received.values()):
                    arrived.clear()
                    await arrived.wait()

            # the broker's view: one consumer (same tag) on each queue, by its current name
            names = {kind: queue.name for kind, queue in queues.items()}
            view = await asyncio.to_thread(broker_view, vhost, unique)
            ours = [entry for entry in view["consumers"] if entry[0] in names.values()]
            assert sorted(ours) == sorted((names[kind], tags[kind]) for kind in queues), (
                f"cycle {cycle}: {view['consumers']}"
            )
            counts = {kind: view["counts"].get(name) for kind, name in names.items()}
            # a quorum queue's count is a metric it updates every few seconds
            # (0 even right after the first consume): never more than 1 here,
            # and 1 once it settles (checked below)
            quorum_count_lagging += counts["quorum"] == 0
            assert counts["classic"] == counts["server-named"] == 1, f"cycle {cycle}: {counts}"
            assert counts["quorum"] in (0, 1), f"cycle {cycle}: {counts}"
            # a nameless robust queue is named here (amq_<hex>) and declared again under it
            assert names["server-named"].startswith("amq_")
            assert server_names[-1:] in ([], [names["server-named"]])
            server_names.append(names["server-named"])

        # every message delivered exactly once, in order
        expected = [f"cycle-{cycle}" for cycle in range(CONSUMER_KILLS)]
        assert received == dict.fromkeys(queues, expected)
        async with asyncio.timeout(20):
            while (await asyncio.to_thread(broker_view, vhost, unique))["counts"].get(
                queues["quorum"].name
            ) != 1:
                await asyncio.sleep(0.5)
        for kind in ("classic", "quorum"):
            await queues[kind].delete(if_unused=False, if_empty=False)
        record(
            "consumers",
            {
                "loop": loop_name(),
                "kill_cycles": CONSUMER_KILLS,
                "queues": list(queues),
                "one_consumer_each_after_every_kill": True,
                "quorum_count_lagging_cycles": quorum_count_lagging,
                "deliveries": {kind: len(bodies) for kind, bodies in received.items()},
                "recovery_seconds": clock.durations,
                "recovery": percentiles(clock.durations),
            },
        )
    finally:
        clock.detach()
        await asyncio.wait_for(connection.close(), 10)


@one_loop("asyncio")
async def test_a_channel_error_then_a_loss_leaves_one_consumer(proxy, amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), unique), timeout=10)
    clock = RecoveryClock(connection)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.work", auto_delete=True)
        tag = await queue.consume(lambda _message: None, no_ack=True)
        with pytest.raises(ChannelNotFoundEntity):  # the broker closes the channel
            await channel.declare_queue(f"{unique}.missing", passive=True)
        proxy.cut()  # and the network blips before the channel is reopened
        await clock.wait_reconnects(1)
        await asyncio.sleep(connection.CHANNEL_REOPEN_PAUSE + 0.5)
        listed = await asyncio.to_thread(list_consumers, vhost_of(amqp_url))
        assert [entry for entry in listed if entry[0] == queue.name] == [(queue.name, tag)]
    finally:
        clock.detach()
        await asyncio.wait_for(connection.close(), 10)


@one_loop("asyncio")
async def test_a_consumer_cancelled_by_the_broker_then_a_loss_settles(proxy, amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), unique), timeout=10)
    clock = RecoveryClock(connection)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.work")
        tag = await queue.consume(lambda _message: None, no_ack=True)
        async with await amqpfast.connect(amqp_url, timeout=10) as other:
            # the broker cancels the consumer: amqpfast waits for the queue to come back
            await (await other.channel()).queue_delete(queue.name)
        await asyncio.sleep(0.02)
        proxy.cut()  # and the network blips before it is back
        await clock.wait_reconnects(1)
        await asyncio.sleep(2)  # a settled connection stays up
        listed = await asyncio.to_thread(list_consumers, vhost_of(amqp_url))
        assert clock.reconnects == 1, f"{clock.reconnects} reconnects"
        assert [entry for entry in listed if entry[0] == queue.name] == [(queue.name, tag)]
    finally:
        clock.detach()
        await asyncio.wait_for(connection.close(), 10)
        async with await amqpfast.connect(amqp_url, timeout=10) as other:
            await (await other.channel()).queue_delete(f"{unique}.work")


# ---------------------------------------------------------------- 3. topology comes back

TOPOLOGY_KILLS = 2


def topology(vhost: str, prefix: str, renames: dict[str, str]) -> dict[str, set[tuple[str, ...]]]:
    """Our exchanges, queues and bindings as the broker lists them.

    Only names that start with ``prefix`` or are server-named queues of ours
    (given in ``renames``: current name -> stable label) are kept, so
    entities of other tests in the vhost do not count.
    """

    def label(name: str) -> str:
        return renames.get(name, name)

    def ours(name: str) -> bool:
        return name.startswith(prefix) or name in renames

    calls = {
        "exchanges": ("list_exchanges", "name", "type", "durable", "auto_delete", "internal"),
        "queues": ("list_queues", "name", "durable", "auto_delete", "exclusive", "arguments"),
        "bindings": (
            "list_bindings",
            "source_name",
            "source_kind",
            "destination_name",
            "destination_kind",
            "routing_key",
            "arguments",
        ),
    }
    with ThreadPoolExecutor(len(calls)) as pool:
        listings = {
            kind: pool.submit(rabbitmqctl, call[0], "-p", vhost, *call[1:], "-q")
            for kind, call in calls.items()
        }
        rows = {kind: tab_rows(listing.result())[1:] for kind, listing in listings.items()}
    bindings = set()
    for source, source_kind, destination, destination_kind, key, arguments in rows["bindings"]:
        if ours(source) or ours(destination):
            ends = (label(source), source_kind, label(destination), destination_kind)
            bindings.add((*ends, label(key), arguments))
    return {
        "exchanges": {tuple(row) for row in rows["exchanges"] if ours(row[0])},
        "queues": {(label(row[0]), *row[1:]) for row in rows["queues"] if ours(row[0])},
        "bindings": bindings,
    }


@one_loop("uvloop")
async def test_topology_is_the_same_after_a_kill(amqp_url, unique):
    vhost = vhost_of(amqp_url)
    connection = await amqpfast.connect_robust(robust_url(amqp_url, unique), timeout=10)
    clock = RecoveryClock(connection)
    try:
        channel = await connection.channel()
        # Auto-delete exchanges bound only to exclusive queues vanish with the
        # connection, so the restore has to redo all of it, in order.
        src = await channel.declare_exchange(f"{unique}.src", "topic", auto_delete=True)
        dst = await channel.declare_exchange(f"{unique}.dst", "fanout", auto_delete=True)
        hdr = await channel.declare_exchange(f"{unique}.hdr", "headers", auto_delete=True)
        lasting = await channel.declare_exchange(f"{unique}.lasting", "direct", durable=True)
        await dst.bind(src, "a.#")  # exchange to exchange
        await hdr.bind(src, "h.#", arguments={"x-note": "e2e"})
        first = await channel.declare_queue(exclusive=True)
        second = await channel.declare_queue(exclusive=True)
        named = await channel.declare_queue(f"{unique}.named", exclusive=True)
        limited = await channel.declare_queue(
            f"{unique}.limited", exclusive=True, arguments={"x-max-length": 100}
        )
        auto = await channel.declare_queue(f"{unique}.auto", auto_delete=True)
        durable = await channel.declare_queue(f"{unique}.durable", durable=True)
        await first.bind(dst, "fan")
        await second.bind(src, "b.*")
        await second.bind(hdr, "", arguments={"x-match": "all", "kind": "x"})
        await named.bind(src, "a.b")
        await limited.bind(lasting, "l")
        await auto.bind(dst, "")
        await durable.bind(lasting, "d", arguments={"x-custom": "yes"})
        got: list[bytes] = []
        await auto.consume(lambda message: got.append(message.body), no_ack=True)
        server_named = {"first": first, "second": second}

        def renames() -> dict[str, str]:
            return {queue.name: f"<server-named {label}>" for label, queue in server_named.items()}

        before = await asyncio.to_thread(topology, vhost, unique, renames())
        assert len(before["exchanges"]) == 4 and len(before["queues"]) == 6
        sizes = {kind: len(entries) for kind, entries in before.items()}
        for kill in range(TOPOLOGY_KILLS):
            assert await asyncio.to_thread(close_connections_named, unique, "soak kill") == 1
            await clock.wait_reconnects(kill + 1)
            after = await asyncio.to_thread(topology, vhost, unique, renames())
            for kind in before:
                assert after[kind] == before[kind], (
                    f"kill {kill}, {kind}: gone {before[kind] - after[kind]}, "
                    f"new {after[kind] - before[kind]}"
                )
            # and it routes: src -> dst (e2e) -> auto, whose consumer is back
            await src.publish(Message(f"kill {kill}".encode()), "a.x")
            async with asyncio.timeout(5):
                while f"kill {kill}".encode() not in got:
                    await asyncio.sleep(0.01)

        await durable.delete(if_unused=False, if_empty=False)
        await lasting.delete()
        record(
            "topology",
            {
                "loop": loop_name(),
                "kills": TOPOLOGY_KILLS,
                "entities": sizes,
                "same_after_every_kill": True,
                "recovery_seconds": clock.durations,
                "recovery": percentiles(clock.durations),
            },
        )
    finally:
        clock.detach()
        await asyncio.wait_for(connection.close(), 10)


@one_loop("asyncio")
async def test_default_binding_key_follows_a_server_named_queue(amqp_url, unique):
    # Queue.bind's routing key defaults to the queue's name; after a restore
    # a server-named queue has a new name, and a message sent to that name
    # should still reach it.
    connection = await amqpfast.connect_robust(robust_url(amqp_url, unique), timeout=10)
    clock = RecoveryClock(connection)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{unique}.direct", auto_delete=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange)  # routing key: the queue's name
        assert await asyncio.to_thread(close_connections_named, unique, "soak kill") == 1
        await clock.wait_reconnects(1)
        await exchange.publish(Message(b"by name"), queue.name)
        assert (await queue.get(timeout=5, fail=False)) is not None
    finally:
        clock.detach()
        await asyncio.wait_for(connection.close(), 10)


# ---------------------------------------------------------------- 4. a silent peer

STALLS = 5
HEARTBEAT = 1


@one_loop("uvloop")
async def test_a_stalled_peer_is_detected_and_recovered(proxy, amqp_url, unique):
    url = robust_url(proxy.url(amqp_url), unique, heartbeat=HEARTBEAT)
    connection = await amqpfast.connect_robust(url, timeout=10)
    clock = RecoveryClock(connection)
    loop = asyncio.get_running_loop()
    detections: list[float] = []
    reasons: list[str] = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        for stall in range(STALLS):
            proxy.stall()
            stalled_at = loop.time()
            async with asyncio.timeout(2 * HEARTBEAT + 5):
                while clock.lost_at is None:
                    await asyncio.sleep(0.01)
            detections.append(clock.lost_at - stalled_at)
            closing = connection.transport.connection.closing
            reasons.append(type(closing.exception()).__name__ if closing.done() else "?")
            proxy.resume()  # the reconnect goes through once the "network" is back
            await clock.wait_reconnects(stall + 1, timeout=20)
            await channel.default_exchange.publish(Message(b"back"), queue.name)
            assert (await queue.get(timeout=5)).body == b"back"
        record(
            "stall",
            {
                "loop": loop_name(),
                "heartbeat": HEARTBEAT,
                "stalls": STALLS,
                "detection_seconds": [round(value, 3) for value in detections],
                "detected_by": dict(collections.Counter(reasons)),
                "recovery_after_detection_seconds": clock.durations,
                "detection": percentiles(detections),
            },
        )
        assert max(detections) <= 2 * HEARTBEAT + 1
    finally:
        proxy.resume()
        clock.detach()
        await asyncio.wait_for(connection.close(), 10)


# ---------------------------------------------------------------- 5. no leaks

ROUNDS = 200
WARM_UP = 20
# bytes that 180 rounds may leave behind (interned strings, caches) before
# it counts as a leak: a leak of one small object per round is more
GROWTH_BOUND = 100_000


@one_loop("asyncio")
async def test_connect_use_close_rounds_leave_nothing_behind(amqp_url, unique):
    url = robust_url(amqp_url, unique)
    alive: weakref.WeakSet[RobustConnection] = weakref.WeakSet()
    got = asyncio.Event()

    async def one_round() -> None:
        connection = await amqpfast.connect_robust(url, timeout=10)
        alive.add(connection)
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.consume(lambda _message: got.set(), no_ack=True)
        await channel.default_exchange.publish(Message(b"x"), queue.name)
        await asyncio.wait_for(got.wait(), 5)
        got.clear()
        await asyncio.wait_for(connection.close(), 10)

    def settle() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    with loop_exception_log(asyncio.get_running_loop()) as problems:
        started = time.monotonic()
        for _ in range(WARM_UP):
            await one_round()
        await asyncio.sleep(0.05)
        tracemalloc.start()
        try:
            baseline = settle()
            for _ in range(ROUNDS - WARM_UP):
                await one_round()
            await asyncio.sleep(0.05)  # callbacks scheduled by the last close
            growth = settle() - baseline
            top = tracemalloc.take_snapshot().statistics("lineno")[:5]
        finally:
            tracemalloc.stop()
        seconds = time.monotonic() - started
        gc.collect()
    leftovers = other_tasks()
    async with asyncio.timeout(10):  # the broker forgets a closed connection at once
        while broker_left := await asyncio.to_thread(connections_named, unique):
            await asyncio.sleep(0.5)
    record(
        "rounds",
        {
            "loop": loop_name(),
            "rounds": ROUNDS,
            "seconds": round(seconds, 1),
            "tasks_left": len(leftovers),
            "connections_left_on_broker": len(broker_left),
            "connection_objects_alive": len(alive),
            "traced_growth_bytes": growth,
            "loop_exceptions": len(problems),
        },
    )
    assert leftovers == []
    assert problems == []
    assert len(alive) == 0, "closed connections are still referenced"
    assert growth < GROWTH_BOUND, "\n".join(str(stat) for stat in top)


# ---------------------------------------------------------------- 6. close at awkward moments


async def wait_for_loss(connection: RobustConnection, timeout: float = 10) -> None:
    # the transport's end, not `connected` (a reconnect at once may hide it)
    transport = connection.transport
    if transport is None:
        return
    await asyncio.wait_for(
        asyncio.gather(transport.connection.closing, return_exceptions=True), timeout
    )


# Each scenario returns its facts; "violations" lists what went wrong beyond
# the checks every scenario gets (tasks, broker connections, loop exceptions).


async def cancel_during_handshake(amqp_url: str, name: str, proxy: TCPProxy) -> dict[str, Any]:
    proxy.stall()  # the broker's Connection.Start never arrives
    connecting = asyncio.ensure_future(
        amqpfast.connect_robust(robust_url(proxy.url(amqp_url), name), timeout=10)
    )
    await asyncio.sleep(0.3)
    connecting.cancel()
    outcome = await asyncio.wait_for(asyncio.gather(connecting, return_exceptions=True), 5)
    proxy.resume()
    await asyncio.sleep(0.3)  # a handshake that went on would finish now
    cancelled = isinstance(outcome[0], asyncio.CancelledError)
    return {"connect": type(outcome[0]).__name__, "violations": [] if cancelled else ["connect"]}


async def close_during_handshake(amqp_url: str, name: str, proxy: TCPProxy) -> dict[str, Any]:
    proxy.stall()
    connection = RobustConnection(robust_url(proxy.url(amqp_url), name))
    connecting = asyncio.ensure_future(connection.connect(timeout=10))
    await asyncio.sleep(0.3)
    await asyncio.wait_for(connection.close(), 5)
    outcome = await asyncio.wait_for(asyncio.gather(connecting, return_exceptions=True), 5)
    proxy.resume()
    await asyncio.sleep(0.3)
    violations = [] if isinstance(outcome[0], AMQPError) else ["connect() did not fail"]
    violations += [] if connection.is_closed else ["not closed"]
    return {"connect": type(outcome[0]).__name__, "violations": violations}


async def close_while_first_connect_retries(
    amqp_url: str, name: str, proxy: TCPProxy
) -> dict[str, Any]:
    # fail_fast off: connect() keeps trying; close() comes between two tries
    port = proxy.port
    await proxy.close()  # nothing listens there now
    url = robust_url(amqp_url.replace(":5672/", f":{port}/"), name, fail_fast=0)
    connection = RobustConnection(url)
    connecting = asyncio.ensure_future(connection.connect(timeout=5))
    await asyncio.sleep(0.25)
    await asyncio.wait_for(connection.close(), 5)
    later = await TCPProxy().start(port)  # then the broker becomes reachable
    try:
        outcome = await asyncio.wait_for(asyncio.gather(connecting, return_exceptions=True), 5)
        await asyncio.sleep(0.3)
        on_broker = await asyncio.to_thread(connections_named, name)
    finally:
        if connection.transport is not None:  # whatever it opened
            await asyncio.wait_for(connection.transport.connection.close(), 5)
        await later.close()
    violations = [] if isinstance(outcome[0], BaseException) else ["connect() succeeded"]
    violations += [f"{len(on_broker)} connection(s) on the broker after close()"] * bool(on_broker)
    return {
        "connect": type(outcome[0]).__name__,
        "open_after_close": len(on_broker),
        "violations": violations,
    }


async def close_during_restore(amqp_url: str, name: str, proxy: TCPProxy) -> dict[str, Any]:
    connection = await amqpfast.connect_robust(robust_url(amqp_url, name), timeout=10)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(f"{name}.x", "fanout", auto_delete=True)
    for _ in range(300):  # enough that the restore takes a while
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "k")
    reconnected: list[object] = []
    connection.reconnect_callbacks.add(reconnected.append)
    killing = asyncio.ensure_future(asyncio.to_thread(close_connections_named, name, "soak kill"))
    await wait_for_loss(connection)
    await asyncio.wait_for(connection.connected.wait(), 10)  # connected, restoring
    restoring = connection.reconnecting and not reconnected
    await asyncio.wait_for(connection.close(), 5)
    assert await asyncio.wait_for(killing, 10) == 1
    violations = [] if restoring else ["the close did not come during the restore"]
    return {"closed_while_restoring": restoring, "violations": violations}


async def close_while_reconnect_is_refused(
    amqp_url: str, name: str, proxy: TCPProxy
) -> dict[str, Any]:
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), name), timeout=10)
    channel = await connection.channel()
    await channel.declare_queue(exclusive=True)
    await proxy.close()  # cut, and nothing listens any more: each attempt is refused
    await asyncio.sleep(0.5)
    reconnecting = connection.reconnecting
    await asyncio.wait_for(connection.close(), 5)
    violations = [] if reconnecting else ["the close did not come during the reconnect"]
    return {"closed_while_reconnecting": reconnecting, "violations": violations}


async def close_during_a_stalled_attempt(
    amqp_url: str, name: str, proxy: TCPProxy
) -> dict[str, Any]:
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), name), timeout=10)
    channel = await connection.channel()
    await channel.declare_queue(exclusive=True)
    proxy.stall()
    proxy.cut()  # lost; the next attempt hangs in its handshake
    await wait_for_loss(connection)
    await asyncio.sleep(0.5)
    attempts = proxy.connections - 1
    await asyncio.wait_for(connection.close(), 5)
    proxy.resume()
    violations = [] if attempts >= 1 else ["no attempt was under way"]
    return {"attempts_under_way": attempts, "violations": violations}


async def close_while_restore_fails(amqp_url: str, name: str, proxy: TCPProxy) -> dict[str, Any]:
    connection = await amqpfast.connect_robust(robust_url(amqp_url, name), timeout=10)
    channel = await connection.channel()
    await channel.declare_queue(f"{name}.conflict", durable=True)
    # Someone else declares the queue again with other arguments: from now
    # on every restore fails with PRECONDITION_FAILED.
    async with await amqpfast.connect(amqp_url, timeout=10) as other:
        other_channel = await other.channel()
        await other_channel.queue_delete(f"{name}.conflict")
        await other_channel.declare_queue(
            f"{name}.conflict", durable=True, arguments={"x-max-length": 1}
        )
    refused: list[BaseException] = []

    def on_close(_sender: object, error: BaseException | None) -> None:
        if isinstance(error, AMQPChannelError):
            refused.append(error)

    connection.close_callbacks.add(on_close)
    assert await asyncio.to_thread(close_connections_named, name, "soak kill") == 1
    async with asyncio.timeout(10):  # two restores failed, the third is under way
        while len(refused) < 2:
            await asyncio.sleep(0.005)
    failing = connection.reconnecting
    await asyncio.wait_for(connection.close(), 5)
    async with await amqpfast.connect(amqp_url, timeout=10) as other:
        await (await other.channel()).queue_delete(f"{name}.conflict")
    violations = [] if failing else ["the restore did not fail"]
    return {"closed_while_failing": failing, "violations": violations}


async def close_while_a_consumer_waits_for_its_queue(
    amqp_url: str, name: str, proxy: TCPProxy
) -> dict[str, Any]:
    # aio-pika's default interval: the consumer waits that long between two looks
    url = robust_url(amqp_url, name, reconnect_interval=5)
    connection = await amqpfast.connect_robust(url, timeout=10)
    channel = await connection.channel()
    queue = await channel.declare_queue(f"{name}.deleted")
    await queue.consume(lambda _message: None, no_ack=True)
    async with await amqpfast.connect(amqp_url, timeout=10) as other:
        # the broker cancels the consumer; amqpfast waits for the queue to come back
        await (await other.channel()).queue_delete(queue.name)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(connection.close(), 5)
    return {"violations": []}


AWKWARD_CLOSES = {
    "cancel-during-handshake": cancel_during_handshake,
    "close-during-handshake": close_during_handshake,
    "close-while-first-connect-retries": close_while_first_connect_retries,
    "close-during-restore": close_during_restore,
    "close-while-reconnect-is-refused": close_while_reconnect_is_refused,
    "close-during-a-stalled-attempt": close_during_a_stalled_attempt,
    "close-while-restore-fails": close_while_restore_fails,
    "close-while-a-consumer-waits-for-its-queue": close_while_a_consumer_waits_for_its_queue,
}


@one_loop("uvloop")
@pytest.mark.parametrize("moment", list(AWKWARD_CLOSES))
async def test_close_at_an_awkward_moment(proxy, amqp_url, unique, moment):
    scenario = AWKWARD_CLOSES[moment]
    with loop_exception_log(asyncio.get_running_loop()) as problems:
        started = time.monotonic()
        facts = await asyncio.wait_for(scenario(amqp_url, unique, proxy), 30)
        seconds = time.monotonic() - started
        for _ in range(3):
            await asyncio.sleep(0)  # the callbacks the close scheduled
        leftovers = other_tasks()
        for task in leftovers:  # so that they cannot disturb the next test
            task.cancel()
        gc.collect()  # a future nobody retrieved reports itself when collected
        await asyncio.sleep(0)
    broker_left = await asyncio.to_thread(connections_named, unique)
    facts.update(
        seconds=round(seconds, 2),
        tasks_left=[getattr(task.get_coro(), "__qualname__", "?") for task in leftovers],
        connections_left_on_broker=len(broker_left),
        loop_exceptions=[str(problem.get("message")) for problem in problems],
    )
    record(f"close:{moment}", {"loop": loop_name(), **facts})
    assert facts["violations"] == []
    assert facts["tasks_left"] == []
    assert broker_left == []
    assert facts["loop_exceptions"] == []
