"""Failover drill: confirmed publishing into a quorum queue, and a consumer on it,
while the cluster node that holds the publisher's connection is killed.

What it does, against a :class:`~amqpfast.testing.RabbitCluster` of three nodes:

1. A publisher (``connect_robust`` with the nodes' URLs in turn) publishes
   persistent messages, each with its sequence number as message_id, with
   publisher confirms, ``WINDOW`` at a time. A publish that fails (the
   connection died under it, a nack, a timeout) is sent again: that is the
   at-least-once publisher, and where the duplicates come from.
2. A consumer (``connect_robust`` too) consumes with ``message.process()``.
3. ``kills`` times, spread over the messages, the node the publisher is
   connected to gets SIGKILL and is started again (it rejoins with its data);
   the next kill waits until it is back, so the queue always has a majority.
4. Then the node that leads the queue is killed while a publisher connected to
   another node goes on: the client should see only a pause.
5. The consumer drains the queue. Every confirmed message must have been
   processed (lost: 0), and nothing may be left in the queue.

Failover time is measured per kill: from the moment the node is gone (its VM
killed and reaped) to the confirm of the first publish sent after it (which only
another node can give); reconnect time from the SIGKILL to the reconnect.

From a shell, against the cluster of ``scripts/cluster.sh up``::

    .venv/bin/python tests/failover_drill.py --messages 20000 --kills 5 --loop uvloop

``scripts/failover.sh`` runs the full drill on both loops and prints the figures
that RELIABILITY.md records.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from pamqp import commands as spec

import amqpfast
from amqpfast import DeliveryMode, IncomingMessage, Message
from amqpfast.abc import AbstractRobustConnection
from amqpfast.exceptions import AMQPError
from amqpfast.testing import RabbitCluster, with_query

WINDOW = 100  # publishes awaiting their confirm at once
PUBLISH_TIMEOUT = 30.0  # seconds for one publish, reconnect included
RETRY_PAUSE = 0.05
DRAIN_TIMEOUT = 120.0
LEADER_KILL_MESSAGES = 2000


@dataclasses.dataclass
class DrillResult:
    """What one drill saw; ``lost`` must be 0 and ``left_in_queue`` 0."""

    loop: str
    kills: int = 0  # SIGKILLs of the node holding the publisher's connection
    confirmed: int = 0  # distinct messages the broker confirmed
    publishes: int = 0  # Basic.Publish sent, retries included
    retries: int = 0
    retry_reasons: dict[str, int] = dataclasses.field(default_factory=dict)  # by error type
    processed: int = 0  # deliveries handled by the consumer, duplicates included
    lost: int = 0  # confirmed, never processed
    duplicates: int = 0  # deliveries of a message already processed
    left_in_queue: int = 0
    failover: list[float] = dataclasses.field(default_factory=list)  # seconds, per kill
    # seconds from each kill to the publisher's reconnect (to another node)
    reconnect: list[float] = dataclasses.field(default_factory=list)
    moved_to_another_node: int = 0  # kills after which the confirm came from another node
    publisher_reconnects: int = 0
    consumer_reconnects: int = 0
    leader_kill_longest_pause: float | None = None  # seconds without a confirm
    leader_kill_failed_publishes: int = 0
    leader_kill_reconnects: int = 0
    seconds: float = 0.0

    @property
    def failover_p50(self) -> float | None:
        return statistics.median(self.failover) if self.failover else None

    @property
    def failover_max(self) -> float | None:
        return max(self.failover) if self.failover else None

    def summary(self) -> dict[str, Any]:
        figures = dataclasses.asdict(self)
        figures["failover_p50"] = self.failover_p50
        figures["failover_max"] = self.failover_max
        return figures


class _Publisher:
    """Publishes numbered messages at least once, ``WINDOW`` awaiting confirms at a time."""

    def __init__(self, connection: AbstractRobustConnection, queue: str, result: DrillResult):
        self.connection = connection
        self.queue = queue
        self.result = result
        self.confirmed: set[int] = set()
        self.kills_sent: list[float] = []  # monotonic time each SIGKILL was about to be sent
        self.kill_times: list[float] = []  # ... and when its node was gone (killed and reaped)
        self.killed_ports: list[int] = []
        self.confirms: list[float] = []  # monotonic time of each confirm, in order

    async def publish_one(self, channel: Any, number: int) -> None:
        message_id = str(number)
        while True:
            started = time.monotonic()
            self.result.publishes += 1
            try:
                confirmation = await channel.default_exchange.publish(
                    Message(
                        message_id.encode(),
                        message_id=message_id,
                        delivery_mode=DeliveryMode.PERSISTENT,
                    ),
                    self.queue,
                    timeout=PUBLISH_TIMEOUT,
                )
            except (AMQPError, ConnectionError, TimeoutError) as error:
                confirmation = error
            if isinstance(confirmation, spec.Basic.Ack):
                break
            # the connection died under it, the broker nacked or returned it, or it timed out
            reason = type(confirmation).__name__
            self.result.retry_reasons[reason] = self.result.retry_reasons.get(reason, 0) + 1
            self.result.retries += 1
            await asyncio.sleep(RETRY_PAUSE)
        now = time.monotonic()
        self.confirmed.add(number)
        self.confirms.append(now)
        kills = len(self.kill_times)
        if kills and len(self.result.failover) < kills and started >= self.kill_times[-1]:
            # the first confirm of a publish sent after the last kill
            self.result.failover.append(round(now - self.kill_times[-1], 3))
            if self.connection.url.port != self.killed_ports[-1]:
                self.result.moved_to_another_node += 1

    async def run(self, channel: Any, first: int, last: int, allowed: Callable[[], int]) -> None:
        """Publish messages ``first`` to ``last - 1``, none before ``allowed()`` passes it."""
        in_flight: set[asyncio.Task[None]] = set()
        for number in range(first, last):
            while len(in_flight) >= WINDOW or number >= allowed():
                if not in_flight:
                    await asyncio.sleep(0.01)
                    continue
                _, in_flight = await asyncio.wait(
                    in_flight, timeout=0.01, return_when=asyncio.FIRST_COMPLETED
                )
            in_flight.add(asyncio.create_task(self.publish_one(channel, number)))
        if in_flight:
            await asyncio.gather(*in_flight)


class _Consumer:
    """Counts every delivery of each message, processed with ``message.process()``."""

    def __init__(self) -> None:
        self.seen: collections.Counter[int] = collections.Counter()

    async def on_message(self, message: IncomingMessage) -> None:
        async with message.process():
            self.seen[int(message.body)] += 1


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the drill waited {timeout} s for {what}")
        await asyncio.sleep(0.05)


def _leader(cluster: RabbitCluster, queue: str, via: int) -> int:
    """The index of the node leading the quorum queue."""
    listed = json.loads(
        cluster.nodes[via].rabbitmqctl("list_queues", "name", "leader", "--formatter", "json")
    )
    [leader] = [row["leader"] for row in listed if row["name"] == queue]
    return [node.node for node in cluster.nodes].index(leader)


async def _connect(urls: list[str], name: str) -> AbstractRobustConnection:
    return await amqpfast.connect_robust(
        [with_query(url, reconnect_interval=0.2, name=name) for url in urls], timeout=30
    )


def _reconnect_times(connection: AbstractRobustConnection) -> list[float]:
    """The monotonic time of each of the connection's reconnects, filled as they come."""
    times: list[float] = []
    connection.reconnect_callbacks.add(lambda *_: times.append(time.monotonic()))
    return times


async def run_drill(
    cluster: RabbitCluster, messages: int = 20_000, kills: int = 5, leader_kill: bool = True
) -> DrillResult:
    """Run the drill once on the running event loop; see the module's text."""
    loop_name = (
        "uvloop"
        if type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        else ("asyncio")
    )
    result = DrillResult(loop=loop_name)
    started = time.monotonic()
    queue = f"drill-{uuid.uuid4().hex[:10]}"
    urls = cluster.urls
    publisher_connection = await _connect(urls, "drill-publisher")
    consumer_connection = await _connect(urls, "drill-consumer")
    publisher_reconnects = _reconnect_times(publisher_connection)
    consumer_reconnects = _reconnect_times(consumer_connection)
    consumer = _Consumer()
    publisher = _Publisher(publisher_connection, queue, result)
    try:
        channel = await publisher_connection.channel()
        channel.recovery_wait = PUBLISH_TIMEOUT  # publishes wait out a reconnect
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        consuming = await consumer_connection.channel()
        await consuming.set_qos(prefetch_count=200)
        await (await consuming.get_queue(queue)).consume(consumer.on_message)

        # The kills are spread over the messages: kill k when (k + 1) segments
        # are confirmed. The publisher may run half a segment past the next
        # kill and then waits until the last killed node is back, so every
        # kill comes in the middle of traffic and every one happens.
        segment = messages // (kills + 1)
        restarted = 0

        async def kill_the_publishers_node() -> None:
            nonlocal restarted
            for kill in range(kills):
                threshold = (kill + 1) * segment
                await _until(lambda: len(publisher.confirmed) >= threshold, 300, "confirms")  # noqa: B023
                port = publisher_connection.url.port
                publisher.kills_sent.append(time.monotonic())
                await asyncio.to_thread(cluster.kill, cluster.index(port))
                # from here the node is gone (killed and reaped): no publish sent
                # after this moment can be confirmed by it
                publisher.killed_ports.append(port)
                publisher.kill_times.append(time.monotonic())
                result.kills += 1
                await asyncio.to_thread(cluster.start, cluster.index(port))
                restarted += 1

        killer = asyncio.create_task(kill_the_publishers_node())
        await publisher.run(channel, 0, messages, lambda: (restarted + 1) * segment + segment // 2)
        await killer  # its errors, if any
        next_number = messages

        if leader_kill:
            next_number = await _kill_the_leader(cluster, queue, publisher, result, next_number)

        confirmed = set(publisher.confirmed)
        await _until(lambda: confirmed <= consumer.seen.keys(), DRAIN_TIMEOUT, "the consumer")
        await asyncio.sleep(1)  # deliveries of retried duplicates still on their way
        await consumer_connection.close()
        check = await publisher_connection.channel()
        declared = await check.declare_queue(queue, passive=True)
        result.left_in_queue = declared.declaration_result.message_count
        await check.queue_delete(queue)
    finally:
        await publisher_connection.close()
        await consumer_connection.close()

    result.confirmed = len(publisher.confirmed)
    result.processed = sum(consumer.seen.values())
    result.lost = len(publisher.confirmed - consumer.seen.keys())
    result.duplicates = result.processed - len(consumer.seen)
    result.publisher_reconnects = len(publisher_reconnects)
    result.consumer_reconnects = len(consumer_reconnects)
    for killed_at in publisher.kills_sent:
        after = [at for at in publisher_reconnects if at > killed_at]
        if after:
            result.reconnect.append(round(after[0] - killed_at, 3))
    result.seconds = round(time.monotonic() - started, 1)
    return result


async def _kill_the_leader(
    cluster: RabbitCluster, queue: str, main: _Publisher, result: DrillResult, first: int
) -> int:
    """Kill the queue's leader under a publisher connected to another node."""
    leader = _leader(cluster, queue, via=(cluster.index(main.connection.url.port)))
    other = next(index for index in range(len(cluster.nodes)) if index != leader)
    connection = await _connect([cluster.urls[other]], "drill-leader-kill")
    reconnects = _reconnect_times(connection)
    publisher = _Publisher(connection, queue, DrillResult(loop=result.loop))
    publisher.confirmed = main.confirmed  # the same messages, for the drain's check
    try:
        channel = await connection.channel()
        target = len(main.confirmed) + LEADER_KILL_MESSAGES

        killed = False

        async def kill_the_leader() -> None:
            nonlocal killed
            half = target - LEADER_KILL_MESSAGES // 2
            await _until(lambda: len(main.confirmed) >= half, 120, "confirms")
            await asyncio.to_thread(cluster.kill, leader)
            killed = True
            await asyncio.to_thread(cluster.start, leader)

        killer = asyncio.create_task(kill_the_leader())
        last = first + LEADER_KILL_MESSAGES
        # the second half waits for the kill, so that it meets the election
        await publisher.run(channel, first, last, lambda: last if killed else last - 500)
        await killer
    finally:
        await connection.close()
    gaps = [b - a for a, b in zip(publisher.confirms, publisher.confirms[1:], strict=False)]
    result.leader_kill_longest_pause = round(max(gaps), 3) if gaps else None
    result.leader_kill_failed_publishes = publisher.result.retries
    result.leader_kill_reconnects = len(reconnects)
    result.publishes += publisher.result.publishes
    result.retries += publisher.result.retries
    for reason, count in publisher.result.retry_reasons.items():
        result.retry_reasons[reason] = result.retry_reasons.get(reason, 0) + count
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument(
        "--state",
        default=os.environ.get("AMQPFAST_CLUSTER_STATE", ".cluster/cluster.json"),
        help="the state file of scripts/cluster.sh up",
    )
    options = parser.parse_args(argv)
    with open(options.state) as state:
        cluster = RabbitCluster.attach(json.load(state)["base_dir"])
    runner: Any = asyncio.run
    if options.loop == "uvloop":
        import uvloop

        runner = uvloop.run
    result = runner(run_drill(cluster, options.messages, options.kills))
    print(json.dumps(result.summary()))
    return 0 if result.lost == 0 and result.left_in_queue == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
