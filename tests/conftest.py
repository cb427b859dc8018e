"""Fixtures: every codec test on both implementations; the broker, a vhost, a proxy.

The compiled codec must not go missing silently: unless
``AMQPFAST_NO_EXTENSIONS`` asks for the pure-Python run, a failed import of
``amqpfast._codec`` fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from urllib.parse import quote

import pytest
from broker_tools import BROKER_HOST, BROKER_PORT, TCPProxy, rabbitmqctl
from codec_strategies import load_codec

import amqpfast
from amqpfast.core import Channel, Connection, connect


# Session scope: hypothesis refuses function-scoped fixtures in @given tests,
# and the module is the same object for every test anyway.
@pytest.fixture(scope="session", params=["c", "python"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """The codec module under test: the compiled one ("c") or its twin ("python")."""
    return load_codec(request.param)


@pytest.fixture(scope="session")
def compiled_and_python() -> tuple[ModuleType, ModuleType]:
    """Both implementations, for the parity tests."""
    return load_codec("c"), load_codec("python")


# ---------------------------------------------------------------- the broker

# Fixtures that reach a RabbitMQ broker: a test using any of them (even
# through another fixture) is marked "broker", so that -m "not broker" runs
# what needs none.
BROKER_FIXTURES = frozenset(
    (
        "amqp_url",
        "proxy",
        "connection",
        "channel",
        "conn",
        "node",
        # the plugin's (amqpfast.testing.pytest_plugin)
        "amqp_broker_url",
        "amqp_broker_admin",
        "amqp_vhost_url",
        "amqp_connection",
        "amqp_channel",
        "amqp_proxy",
        "amqp_private_broker",
        "amqp_private_node",
        "amqp_cluster",
    )
)


# Fixtures that boot RabbitMQ nodes of the test run's own: their tests are
# marked "nodes" (as are two that boot nodes without them), so that the test
# command can run them in a process of their own beside the rest of the suite.
NODE_FIXTURES = frozenset(("node", "amqp_private_broker", "amqp_private_node", "amqp_cluster"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if BROKER_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.broker)
        if NODE_FIXTURES.intersection(fixtures):
            item.add_marker(pytest.mark.nodes)


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on the default event loop and on uvloop."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    try:
        import uvloop
    except ImportError:  # not on this platform: the default loop only
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A broker URL with a virtual host of this test run's own, deleted afterwards."""
    vhost = f"amqpfast-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/{quote(vhost, safe='')}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def unique() -> str:
    """A name no other test uses, for queues, exchanges and connections."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def conn(amqp_url: str, unique: str) -> AsyncIterator[amqpfast.Connection]:
    """A connection straight to the broker, named after the test's ``unique``."""
    connection = await amqpfast.connect(amqp_url, client_properties={"connection_name": unique})
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TCPProxy]:
    """A TCP proxy to the broker that the test can cut or stall."""
    tcp_proxy = await TCPProxy().start()
    try:
        yield tcp_proxy
    finally:
        await tcp_proxy.close()


@pytest.fixture
async def connection(amqp_url: str, unique: str) -> AsyncIterator[Connection]:
    """An open low-level connection to the test vhost, named after the test."""
    conn = await connect(f"{amqp_url}?name={unique}")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def channel(connection: Connection) -> Channel:
    """A channel in publisher-confirm mode on :func:`connection`."""
    return await connection.channel()
