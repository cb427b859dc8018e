"""amqpfast.testing.node: a private RabbitMQ node that tests may kill, restart and reset.

One node for the module (booting takes seconds); the shared broker is not touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from amqpfast.codec import BasicProperties
from amqpfast.core import connect
from amqpfast.exceptions import ChannelNotFoundEntity
from amqpfast.testing.node import RabbitNode, TLSFiles, private_broker

pytestmark = pytest.mark.skipif(
    not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists(),
    reason="needs Debian's rabbitmq-server installation",
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    folder = tmp_path_factory.mktemp("node-tls")
    authority = trustme.CA()
    server = authority.issue_cert("localhost", "127.0.0.1")
    tls = TLSFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))
    authority.cert_pem.write_to_path(tls.cafile)
    server.cert_chain_pems[0].write_to_path(tls.certfile)
    server.private_key_pem.write_to_path(tls.keyfile)
    with RabbitNode(tls=tls) as started:
        yield started


async def _queue_depth(url: str, queue: str) -> int:
    async with await connect(url) as conn:
        channel = await conn.channel()
        return (await channel.queue_declare(queue, passive=True)).message_count


async def _recovered_queue_depth(url: str, queue: str, timeout: float = 30.0) -> int:
    # A node that answers the protocol header may still be recovering its
    # durable queues (seen once in a loaded CI run: 404 right after start):
    # the queue must come back within ``timeout``, with its message.
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await _queue_depth(url, queue)
            except ChannelNotFoundEntity:
                await asyncio.sleep(0.2)


async def test_kill_and_start_keep_durable_messages(node: RabbitNode, unique: str) -> None:
    async with await connect(node.url) as conn:
        channel = await conn.channel()
        await channel.queue_declare(unique, durable=True)
        await channel.basic_publish(
            b"survives", routing_key=unique, properties=BasicProperties(delivery_mode=2)
        )  # confirmed: the message is on disk
    # The queue's record is in Mnesia, whose log reaches the disk a little
    # later: a kill right after the declare lost the queue once in a loaded
    # CI run. What a crash is to keep must be on disk before it.
    await asyncio.to_thread(node.rabbitmqctl, "eval", "mnesia:sync_log().")
    first_pid = node.pid
    node.kill()
    assert not node.running()
    node.start()
    assert node.pid != first_pid
    assert await _recovered_queue_depth(node.url, unique) == 1


async def test_reset_gives_a_new_nodes_state(node: RabbitNode, unique: str) -> None:
    async with await connect(node.url) as conn:
        channel = await conn.channel()
        await channel.queue_declare(unique, durable=True)
    node.reset()
    with pytest.raises(ChannelNotFoundEntity):
        await _queue_depth(node.url, unique)


async def test_tls_listener_and_rabbitmqctl(node: RabbitNode) -> None:
    assert node.tls is not None
    async with await connect(f"{node.tls_url}?cafile={node.tls.cafile}") as conn:
        assert conn.server_properties["product"] == "RabbitMQ"
        await conn.channel()
    assert "/" in node.rabbitmqctl("list_vhosts", "--quiet").split()


def test_alarms_are_raised_lifted_and_gone_after_a_restart(node: RabbitNode) -> None:
    with node.memory_alarm():
        assert node.alarms() == ["memory"]
    assert node.alarms() == []
    node.set_disk_alarm()
    assert node.alarms() == ["disk"]
    first_pid = node.pid
    node.restart()
    assert node.pid != first_pid
    # runtime settings: the new VM boots with the configured limits
    assert node.alarms() == []


@pytest.mark.nodes  # boots a node of its own
def test_private_broker_boots_a_node_for_a_block_and_removes_it(tmp_path: Path) -> None:
    async def use() -> RabbitNode:
        async with private_broker() as node:
            assert node.running()
            async with await connect(node.url) as conn:
                await conn.channel()
            return node

    async def cancel_while_booting() -> None:
        entered = asyncio.Event()

        async def enter() -> None:
            async with private_broker(base_dir=str(tmp_path)):
                entered.set()

        task = asyncio.create_task(enter())
        async with asyncio.timeout(60):
            while not (tmp_path / "pid").exists():  # booting
                await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not entered.is_set()

    used = asyncio.run(use())
    assert not used.running()
    assert not used.base_dir.exists()
    asyncio.run(cancel_while_booting())
    # the cancelled boot was waited for and its node killed, not left behind
    assert not RabbitNode.attach(str(tmp_path)).running()
