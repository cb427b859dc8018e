"""A private 3-node cluster (amqpfast.testing.cluster) and clients given its nodes.

The cluster is booted once for the module (the ``amqp_cluster`` fixture of
the plugin); the shared broker is not touched. The test that kills a node
comes last and starts it again.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from yarl import URL

import amqpfast
from amqpfast import Message
from amqpfast.exceptions import AMQPConnectionError
from amqpfast.pool import Pool
from amqpfast.testing import RabbitCluster, unique_name, with_query
from amqpfast.testing.node import free_port

REPO = Path(__file__).resolve().parent.parent
# the kill test and the CLI's own boot run once, on the default loop only
ONE_LOOP = pytest.mark.asyncio(loop_factories=["asyncio"])


def _names(cluster: RabbitCluster) -> list[str]:
    return sorted(node.node for node in cluster.nodes)


def test_the_nodes_are_one_cluster(amqp_cluster: RabbitCluster) -> None:
    assert len(amqp_cluster.nodes) == 3
    assert amqp_cluster.boot_time is not None
    status = amqp_cluster.status(via=2)  # asked of the last node to join
    assert sorted(status["running_nodes"]) == _names(amqp_cluster)
    assert sorted(status["disk_nodes"]) == _names(amqp_cluster)
    assert len({node.port for node in amqp_cluster.nodes}) == 3


async def test_a_queue_declared_through_node_1_is_seen_through_node_3(
    amqp_cluster: RabbitCluster,
) -> None:
    name = unique_name("cluster")
    async with await amqpfast.connect(amqp_cluster.urls[0]) as first:
        channel = await first.channel()
        queue = await channel.declare_queue(name, durable=True)
        await channel.default_exchange.publish(Message(b"seen"), routing_key=name)
    try:
        async with await amqpfast.connect(amqp_cluster.urls[2]) as third:
            channel = await third.channel()
            seen = await channel.declare_queue(name, passive=True)
            assert seen.declaration_result.message_count == 1
            message = await seen.get(timeout=5)
            assert message.body == b"seen"
            await message.ack()
    finally:
        async with await amqpfast.connect(amqp_cluster.urls[0]) as first:
            await (await first.channel()).queue_delete(queue.name)


async def test_connect_tries_the_hosts_in_turn(amqp_cluster: RabbitCluster) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    alive = amqp_cluster.nodes[1]
    async with await amqpfast.connect([dead, alive.url], timeout=5) as connection:
        assert connection.url.port == alive.port
        assert not connection.is_closed
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{alive.port}"
    async with await amqpfast.connect(f"amqp://guest:guest@{hosts}/?name=two") as connection:
        assert connection.url.port == alive.port
        assert connection.url.query["name"] == "two"  # the options are every host's
        await (await connection.channel()).declare_queue(exclusive=True)


async def test_connect_raises_the_last_hosts_error() -> None:
    ports = [free_port(), free_port()]
    url = f"amqp://guest:guest@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/"
    with pytest.raises(AMQPConnectionError) as caught:
        await amqpfast.connect(url, timeout=5)
    assert str(ports[1]) in str(caught.value)
    notes = getattr(caught.value, "__notes__", [])
    assert len(notes) == 1 and str(ports[0]) in notes[0]


@pytest.mark.parametrize("shape", ["urls", "multi-host", "multi-host shuffled"])
async def test_connect_robust_reaches_the_cluster(amqp_cluster: RabbitCluster, shape: str) -> None:
    given: str | list[str] = {
        "urls": amqp_cluster.urls,
        "multi-host": amqp_cluster.url,
        "multi-host shuffled": with_query(amqp_cluster.url, shuffle=1),
    }[shape]
    async with await amqpfast.connect_robust(given) as connection:
        assert connection.url.port in {node.port for node in amqp_cluster.nodes}
        if shape != "multi-host shuffled":
            assert connection.url.port == amqp_cluster.nodes[0].port  # the first in turn
        channel = await connection.channel()
        assert (await channel.declare_queue(exclusive=True)).name


async def test_shuffle_spreads_connections_over_the_nodes(amqp_cluster: RabbitCluster) -> None:
    # each connection tries the hosts in an order of its own
    connections = [await amqpfast.connect(amqp_cluster.url, shuffle=True) for _ in range(12)]
    try:
        ports = {connection.url.port for connection in connections}
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
    assert len(ports) >= 2  # all 12 on one node: (1/3) ** 11


async def test_pool_made_connections_take_a_multi_host_url(amqp_cluster: RabbitCluster) -> None:
    async def make() -> amqpfast.RobustConnection:
        return await amqpfast.connect_robust(amqp_cluster.url)

    async with Pool(make, max_size=2) as pool, pool.acquire() as connection:
        channel = await connection.channel()
        assert (await channel.declare_queue(exclusive=True)).name


def test_cluster_sh_status_reads_the_state(amqp_cluster: RabbitCluster, tmp_path: Path) -> None:
    state = tmp_path / "cluster.json"
    state.write_text(json.dumps({"base_dir": str(amqp_cluster.base_dir)}))
    done = subprocess.run(
        ["bash", "scripts/cluster.sh", "status", "--state", str(state)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert lines == [[node.node, str(node.pid), node.url] for node in amqp_cluster.nodes]


@pytest.mark.nodes  # boots three nodes through scripts/cluster.sh
def test_cluster_sh_up_status_down(tmp_path: Path) -> None:
    # One node: the whole of up, status and down, in a third of the time of
    # three (the fixture's boot covers the joins; `up` alone boots three).
    state = tmp_path / "state" / "cluster.json"

    def cluster_sh(command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        size = ["--size", "1"] if command == "up" else []
        return subprocess.run(
            ["bash", "scripts/cluster.sh", command, "--state", str(state), *size],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    started = time.monotonic()
    up = cluster_sh("up", timeout=180)
    try:
        assert up.returncode == 0, up.stderr
        assert "booted 1 node in" in up.stdout
        print(f"cluster.sh up: {time.monotonic() - started:.1f} s", file=sys.stderr)
        assert cluster_sh("up").returncode == 1  # one at a time
        status = cluster_sh("status")
        assert status.returncode == 0, status.stderr
        rows = [line.split("\t") for line in status.stdout.splitlines()]
        assert len(rows) == 1
        for name, pid, url in rows:
            assert name.endswith("@localhost") and pid.isdigit()
            assert URL(url).port != 5672  # never the shared broker
        base_dir = Path(json.loads(state.read_text())["base_dir"])
    finally:
        down = cluster_sh("down")
    assert down.returncode == 0, down.stderr
    assert not state.exists() and not base_dir.exists()
    for _name, pid, _url in rows:
        assert (
            not Path(f"/proc/{pid}/cmdline").exists()
            or not Path(f"/proc/{pid}/cmdline").read_bytes()
        )  # gone, or a zombie nobody reaps
    assert cluster_sh("status").returncode == 1


@ONE_LOOP
async def test_killing_the_connected_node_moves_the_connection(
    amqp_cluster: RabbitCluster,
) -> None:
    url = with_query(amqp_cluster.url, reconnect_interval=0.5)
    connection = await amqpfast.connect_robust(url)
    killed: int | None = None
    try:
        channel = await connection.channel()  # publisher confirms on
        queue = await channel.declare_queue(exclusive=True)  # brought back by the restore
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())

        killed = amqp_cluster.index(connection.url.port)
        await asyncio.to_thread(amqp_cluster.kill, killed)
        await asyncio.wait_for(reconnected.wait(), 30)

        assert connection.url.port != amqp_cluster.nodes[killed].port
        confirmation = await channel.default_exchange.publish(
            Message(b"after the kill"), routing_key=queue.name, timeout=10
        )
        assert confirmation is not None
        message = await queue.get(timeout=5)
        assert message.body == b"after the kill"
    finally:
        await connection.close()
        if killed is not None:
            await asyncio.to_thread(amqp_cluster.start, killed)
    assert amqp_cluster.running_nodes() == _names(amqp_cluster)
