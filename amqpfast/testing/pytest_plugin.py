"""pytest fixtures for testing applications that use amqpfast against a real RabbitMQ.

Installing amqpfast registers this module as the pytest plugin ``amqpfast``
(entry point ``pytest11``): the fixtures are available in every test run, and
``pytest -p amqpfast`` enables them when ``PYTEST_DISABLE_PLUGIN_AUTOLOAD`` is
set. With autoloading off, a top-level ``conftest.py`` can load it instead:
``pytest_plugins = ["pytest_asyncio.plugin", "amqpfast.testing.pytest_plugin"]``
(with autoloading on, pytest has loaded it already and refuses it twice). The
plugin defines fixtures only, no hooks: a test that requests none of them runs
as if it were not there.

Fixtures (the async ones need pytest-asyncio and run in the test's
function-scoped event loop; they work in its ``strict`` and ``auto`` modes):

``amqp_broker_url`` (session)
    ``$AMQPFAST_TEST_URL``, else ``amqp://guest:guest@127.0.0.1:5672/``.
``amqp_broker_admin`` (session)
    A :class:`~amqpfast.testing.BrokerAdmin`: ``rabbitmqctl`` for a broker on
    this machine, else the management HTTP API (``$AMQPFAST_TEST_MANAGEMENT_URL``,
    default port 15672 of the broker's host); the tests that need it are skipped,
    with the reason, when neither works. Its ``close_connections_named(name)``
    closes connections as an operator would.
``amqp_unique_name``
    A name no other test uses (for queues, exchanges, connections).
``amqp_vhost_url``
    The broker URL with a virtual host of the test's own, deleted afterwards with
    everything in it.
``amqp_connection``
    An open ``amqpfast.connect()`` to that vhost, named ``amqp_unique_name``,
    closed afterwards.
``amqp_channel``
    A channel (publisher confirms on) of ``amqp_connection``.
``amqp_proxy``
    A started :class:`~amqpfast.testing.TCPProxy` to the broker:
    ``amqp_proxy.url(amqp_vhost_url)`` goes through it, and ``cut()``,
    ``stall()``, ``resume()`` break it; closed afterwards.
``amqp_private_node`` (session)
    A :class:`~amqpfast.testing.RabbitNode`: a RabbitMQ node of this machine's
    installation, private to the run (own ports, data and Erlang node name),
    booted once (some seconds) and killed at the end; skipped when
    ``rabbitmq-server`` is not installed.
``amqp_private_broker``
    ``amqp_private_node``, running and without a resource alarm whatever the
    tests before did to it: kill it, restart it, raise a memory or disk alarm.
``amqp_cluster`` (session)
    A :class:`~amqpfast.testing.RabbitCluster` of three private nodes, booted
    once (some seconds per node) and killed at the end; ``urls`` and ``url``
    (one URL with the three hosts) reach it. A test that kills a node starts
    it again (``amqp_cluster.start(index)``). Skipped when ``rabbitmq-server``
    is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import pytest

import amqpfast

from . import (
    BrokerAdmin,
    BrokerAdminError,
    TCPProxy,
    broker_url_from_env,
    find_broker_admin,
    unique_name,
    with_query,
    with_vhost,
)
from .cluster import RabbitCluster
from .node import NodeError, RabbitNode, _executable

__all__ = [
    "amqp_broker_admin",
    "amqp_cluster",
    "amqp_broker_url",
    "amqp_channel",
    "amqp_connection",
    "amqp_private_broker",
    "amqp_private_node",
    "amqp_proxy",
    "amqp_unique_name",
    "amqp_vhost_url",
]

_F = TypeVar("_F", bound=Callable[..., Any])

if TYPE_CHECKING or importlib.util.find_spec("pytest_asyncio") is not None:
    from pytest_asyncio import fixture as _async_fixture
else:  # pragma: no cover - without pytest-asyncio, pytest itself reports the async fixtures

    def _async_fixture(function: _F) -> _F:
        return pytest.fixture(function)


@pytest.fixture(scope="session")
def amqp_broker_url() -> str:
    """The base broker URL: ``$AMQPFAST_TEST_URL``, else amqp://guest:guest@127.0.0.1:5672/."""
    return broker_url_from_env()


@pytest.fixture(scope="session")
def amqp_broker_admin(amqp_broker_url: str) -> BrokerAdmin:
    """A way to administer the broker (rabbitmqctl, else the management API), or a skip.

    :param amqp_broker_url: the broker of the tests.
    """
    try:
        return find_broker_admin(amqp_broker_url)
    except BrokerAdminError as error:
        pytest.skip(f"amqpfast: no fresh vhost for the test: {error}")


@pytest.fixture
def amqp_unique_name() -> str:
    """A name no other test uses, for queues, exchanges and connections."""
    return unique_name()


@pytest.fixture
def amqp_vhost_url(amqp_broker_url: str, amqp_broker_admin: BrokerAdmin) -> Iterator[str]:
    """The broker URL with a fresh virtual host of this test's own, deleted afterwards.

    :param amqp_broker_url: the broker of the tests (its credentials and query are kept).
    :param amqp_broker_admin: creates and deletes the vhost.
    """
    vhost = unique_name("amqpfast-test")
    user = unquote(urlsplit(amqp_broker_url).username or "guest")
    try:
        amqp_broker_admin.add_vhost(vhost, user)
    except BrokerAdminError:
        # half made (permissions refused): do not leave it behind
        with contextlib.suppress(BrokerAdminError):
            amqp_broker_admin.delete_vhost(vhost)
        raise
    try:
        yield with_vhost(amqp_broker_url, vhost)
    finally:
        amqp_broker_admin.delete_vhost(vhost)


@_async_fixture
async def amqp_connection(
    amqp_vhost_url: str, amqp_unique_name: str
) -> AsyncIterator[amqpfast.Connection]:
    """An open connection to the test's vhost, named ``amqp_unique_name``, closed afterwards.

    :param amqp_vhost_url: the vhost to connect to.
    :param amqp_unique_name: the connection's name (for ``close_connections_named``).
    """
    connection = await amqpfast.connect(with_query(amqp_vhost_url, name=amqp_unique_name))
    try:
        yield connection
    finally:
        await connection.close()


@_async_fixture
async def amqp_channel(amqp_connection: amqpfast.Connection) -> amqpfast.Channel:
    """A channel (publisher confirms on) of ``amqp_connection``, closed with it.

    :param amqp_connection: the connection the channel is opened on.
    """
    return await amqp_connection.channel()


@_async_fixture
async def amqp_proxy(amqp_broker_url: str) -> AsyncIterator[TCPProxy]:
    """A started TCP proxy to the broker, closed afterwards.

    Connect through ``amqp_proxy.url(amqp_vhost_url)``; ``cut()`` drops the
    connections, ``stall()`` freezes them, ``resume()`` lets them go on.

    :param amqp_broker_url: the broker the proxy forwards to.
    """
    parts = urlsplit(amqp_broker_url)
    default_port = 5671 if parts.scheme == "amqps" else 5672
    proxy = TCPProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture(scope="session")
def amqp_private_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A private RabbitMQ node for the test run: booted once, killed at the end.

    Its data and logs stay in pytest's temporary directory (``<basetemp>/amqp-node*``).
    Skipped when ``rabbitmq-server`` is not installed on this machine.

    :param tmp_path_factory: where the node's directory is made.
    """
    try:
        _executable("rabbitmq-server")
    except NodeError as error:
        pytest.skip(f"amqpfast: no private broker: {error}")
    node = RabbitNode(base_dir=str(tmp_path_factory.mktemp("amqp-node")))
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture
def amqp_private_broker(amqp_private_node: RabbitNode) -> RabbitNode:
    """The run's private node, running and with no alarm raised through it.

    A test may kill, stop or restart it and raise alarms
    (``node.memory_alarm()``, ``node.disk_alarm()``): the next test gets it
    booted again (some seconds) and with those alarms lifted.

    :param amqp_private_node: the node.
    """
    if not amqp_private_node.running():
        amqp_private_node.start()
    amqp_private_node.clear_alarms()
    return amqp_private_node


@pytest.fixture(scope="session")
def amqp_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """A private three-node RabbitMQ cluster for the test run: booted once, killed at the end.

    Its nodes' data and logs stay in pytest's temporary directory
    (``<basetemp>/amqp-cluster*``). A test that kills or stops a node starts it
    again (``amqp_cluster.start(index)``) for the tests after it. Skipped when
    ``rabbitmq-server`` is not installed on this machine.

    :param tmp_path_factory: where the cluster's directory is made.
    """
    try:
        _executable("rabbitmq-server")
    except NodeError as error:
        pytest.skip(f"amqpfast: no private cluster: {error}")
    cluster = RabbitCluster(3, base_dir=str(tmp_path_factory.mktemp("amqp-cluster")))
    try:
        cluster.boot()
        yield cluster
    finally:
        cluster.close()
