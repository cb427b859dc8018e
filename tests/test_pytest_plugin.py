"""The pytest plugin for users' tests (amqpfast.testing.pytest_plugin), against the broker.

The fixtures are used here as a user would (the entry point loads the plugin
into this run too); the documented example and a few user test modules run in
pytest subprocesses, which shows that ``-p amqpfast`` enables the plugin, that
the vhosts go away, and that a broker that cannot be administered skips.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from broker_tools import connections_named, rabbitmqctl, refused_port

import amqpfast
import amqpfast.testing
from amqpfast.exceptions import AMQPError
from amqpfast.testing import BrokerAdmin, RabbitNode, TCPProxy, with_query

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "testing" / "test_with_amqpfast.py"
TIMEOUT = 120  # seconds for one pytest subprocess


def vhosts() -> set[str]:
    return set(rabbitmqctl("list_vhosts", "-q", "name").split())


def vhost_of(url: str) -> str:
    return unquote(urlsplit(url).path[1:])


# ------------------------------------------------------- the fixtures in use


async def test_a_fresh_vhost_and_a_channel_on_it(
    amqp_vhost_url: str, amqp_channel: amqpfast.Channel, amqp_unique_name: str
) -> None:
    vhost = vhost_of(amqp_vhost_url)
    assert vhost.startswith("amqpfast-test-")
    assert vhost in await asyncio.to_thread(vhosts)
    # the vhost is empty: only the broker's own exchanges
    listing = await asyncio.to_thread(rabbitmqctl, "list_queues", "-p", vhost, "-q", "name")
    assert listing.split() == []

    queue = await amqp_channel.declare_queue("work", durable=True)
    await amqp_channel.default_exchange.publish(amqpfast.Message(b"ping"), routing_key="work")
    message = await queue.get(timeout=5)
    await message.ack()
    assert message.body == b"ping"
    # the connection is named after the test, for close_connections_named
    assert len(await asyncio.to_thread(connections_named, amqp_unique_name)) == 1


async def test_the_proxy_cuts_a_connection(amqp_proxy: TCPProxy, amqp_vhost_url: str) -> None:
    url = amqp_proxy.url(amqp_vhost_url)
    assert urlsplit(url).port == amqp_proxy.port
    assert urlsplit(url).path == urlsplit(amqp_vhost_url).path
    connection = await amqpfast.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        assert amqp_proxy.connections == 1
        amqp_proxy.cut()
        with pytest.raises(AMQPError):
            for _ in range(50):  # the client notices the reset at once
                await channel.default_exchange.publish(
                    amqpfast.Message(b"lost"), routing_key=queue.name
                )
                await asyncio.sleep(0.05)
        # close callbacks run in a task of their own (as in aio-pika)
        await asyncio.wait_for(connection.closed(), 5)
        assert connection.is_closed
    finally:
        await connection.close()


async def test_the_admin_closes_a_named_connection(
    amqp_broker_admin: BrokerAdmin, amqp_vhost_url: str, amqp_unique_name: str
) -> None:
    url = with_query(amqp_vhost_url, name=amqp_unique_name, reconnect_interval=0.1)
    connection = await amqpfast.connect_robust(url)
    async with connection:
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda _connection: reconnected.set())
        closed = await asyncio.to_thread(
            amqp_broker_admin.close_connections_named, amqp_unique_name
        )
        assert closed == 1
        await asyncio.wait_for(reconnected.wait(), timeout=15)


# ------------------------------------------------- the private broker fixture
# In this order: each test leaves the node broken for the next one, which
# must get it back running and without the alarm.

_pid_of_the_killed_node: list[int | None] = []


def test_a_test_may_leave_the_private_broker_in_an_alarm(
    amqp_private_broker: RabbitNode,
) -> None:
    assert amqp_private_broker.url != amqpfast.testing.DEFAULT_BROKER_URL
    amqp_private_broker.set_memory_alarm()
    assert amqp_private_broker.alarms() == ["memory"]


def test_the_next_test_gets_it_without_the_alarm_and_may_kill_it(
    amqp_private_broker: RabbitNode, amqp_private_node: RabbitNode
) -> None:
    assert amqp_private_broker is amqp_private_node  # one node for the run
    assert amqp_private_broker.alarms() == []
    _pid_of_the_killed_node.append(amqp_private_broker.pid)
    amqp_private_broker.kill()
    assert not amqp_private_broker.running()


def test_the_next_test_gets_it_running_again(amqp_private_broker: RabbitNode) -> None:
    assert amqp_private_broker.running()
    assert amqp_private_broker.pid not in _pid_of_the_killed_node
    with socket.create_connection(("127.0.0.1", amqp_private_broker.port), timeout=5):
        pass


# --------------------------------------------- users' test runs (subprocesses)


def run_pytest(
    *arguments: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *arguments],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return done


@pytest.mark.broker  # a pytest run of its own, against the broker
@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not in the sdist")
def test_the_documented_example_passes() -> None:
    # As documented for runs without autoloading: -p enables the plugin. Strict
    # mode (pytest-asyncio's default) shows that the fixtures declare themselves.
    done = run_pytest(
        "-p",
        "asyncio",
        "-p",
        "amqpfast",
        "-o",
        "asyncio_mode=strict",
        "-W",
        "error::pytest.PytestAssertRewriteWarning",
        str(EXAMPLE),
        cwd=EXAMPLE.parent,
        env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout


USER_TESTS = """
import pathlib

import pytest

def test_records_its_vhost(amqp_vhost_url):
    pathlib.Path("vhost-url.txt").write_text(amqp_vhost_url)

@pytest.mark.asyncio
async def test_connects(amqp_channel):
    queue = await amqp_channel.declare_queue(exclusive=True)
    assert queue.name

def test_without_fixtures():
    pass
"""


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's project: its own (empty) pytest config, pytest-asyncio in strict mode."""
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
    )
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    return tmp_path


@pytest.mark.broker
def test_the_entry_point_loads_the_plugin_and_vhosts_go_away(user_project: Path) -> None:
    before = vhosts()
    done = run_pytest("-W", "error", cwd=user_project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout, done.stdout
    vhost = vhost_of((user_project / "vhost-url.txt").read_text())
    assert vhost not in before
    assert vhost not in vhosts()  # deleted after its test


def test_without_a_way_to_make_vhosts_the_tests_skip(user_project: Path) -> None:
    with refused_port() as port:
        done = run_pytest(
            "-rs",
            cwd=user_project,
            env={
                "PATH": str(Path(sys.executable).parent),  # no rabbitmqctl
                "AMQPFAST_TEST_MANAGEMENT_URL": f"http://127.0.0.1:{port}",
            },
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 2 skipped" in done.stdout, done.stdout
    assert "rabbitmqctl is not on the PATH" in done.stdout
    assert "management API" in done.stdout
