"""Fixtures for aio-pika's own test suite, run against this machine's brokers.

aio-pika's conftest starts RabbitMQ in Docker. This one replaces it (the
runner copies it over aio-pika's ``tests/conftest.py``) and gives the tests
the same fixtures without Docker:

- ``amqp_direct_url``/``amqp_url``: the shared broker, in a virtual host the
  runner made for this run (``AMQPFAST_SUITE_URL``);
- ``rabbitmq_container``/``docker``: the private node the runner booted
  (``AMQPFAST_SUITE_NODE``), with a TLS listener, which tests may kill,
  restart and reset (see docker_client.py);
- ``add_cleanup``, ``create_task``, ``connection``, ``channel``,
  ``declare_queue``, ``declare_exchange``, ``memory_tracer``: as aio-pika
  defines them, so that its tests see the behaviour they were written for.

suite_plugin.py, loaded before this file, makes ``aio_pika`` amqpfast and
provides ``amqp_direct_url``, ``rabbitmq_container`` and ``docker``.
"""

import asyncio
import gc
import tracemalloc
from contextlib import suppress
from functools import partial

import aio_pika
import aiormq
import pamqp
import pytest
from aiomisc import awaitable
from yarl import URL


@pytest.fixture
def amqp_url(request, amqp_direct_url) -> URL:
    # Each connection is named after its test, as aio-pika's fixtures do.
    return amqp_direct_url.update_query(name=request.node.nodeid)


# ---------------------------------------------------------------- helpers


@pytest.fixture
async def add_cleanup(event_loop):
    cleanups = []

    def add(func, *args, **kwargs):
        cleanups.append(partial(awaitable(func), *args, **kwargs))

    try:
        yield add
    finally:
        while cleanups:
            await cleanups.pop()()


@pytest.fixture
async def create_task(event_loop):
    tasks = []

    def create(coroutine):
        task = event_loop.create_task(coroutine)
        tasks.append(task)
        return task

    try:
        yield create
    finally:
        pending = [task for task in tasks if not task.done()]
        for task in pending:
            task.cancel()
        for outcome in await asyncio.gather(*pending, return_exceptions=True):
            if not isinstance(outcome, asyncio.CancelledError):
                raise outcome


# ---------------------------------------------------------------- connections


@pytest.fixture(
    scope="module",
    params=[aio_pika.connect, aio_pika.connect_robust],
    ids=["connect", "connect_robust"],
)
def connection_fabric(request):
    return request.param


@pytest.fixture
def create_connection(connection_fabric, event_loop, amqp_url):
    return partial(connection_fabric, amqp_url, loop=event_loop)


@pytest.fixture
def create_channel(connection, add_cleanup):
    default_connection = connection

    async def create(cleanup=True, connection=None, *args, **kwargs):
        channel = await (connection or default_connection).channel(*args, **kwargs)
        if cleanup:
            add_cleanup(channel.close)
        return channel

    return create


@pytest.fixture
async def connection(create_connection):
    async with await create_connection() as conn:
        yield conn


@pytest.fixture
async def channel(connection):
    async with connection.channel() as ch:
        yield ch


@pytest.fixture
def declare_queue(connection, channel, add_cleanup):
    default_channel = channel

    async def declare(*args, cleanup=True, channel=None, **kwargs):
        queue = await (channel or default_channel).declare_queue(*args, **kwargs)
        if cleanup and not kwargs.get("auto_delete"):
            add_cleanup(queue.delete)
        return queue

    return declare


@pytest.fixture
def declare_exchange(connection, channel, add_cleanup):
    default_channel = channel

    async def declare(*args, channel=None, cleanup=True, **kwargs):
        exchange = await (channel or default_channel).declare_exchange(*args, **kwargs)
        if cleanup and not kwargs.get("auto_delete"):
            add_cleanup(exchange.delete)
        return exchange

    return declare


@pytest.fixture(autouse=True)
def memory_tracer():
    # No memory may stay allocated by the client's modules after a test.
    tracemalloc.start()
    tracemalloc.clear_traces()
    filters = tuple(
        tracemalloc.Filter(True, module.__file__) for module in (aiormq, pamqp, aio_pika)
    )
    before = tracemalloc.take_snapshot().filter_traces(filters)
    try:
        yield
        with suppress(Exception):
            gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(filters)
        assert not after.compare_to(before, "lineno", cumulative=True)
    finally:
        tracemalloc.stop()
