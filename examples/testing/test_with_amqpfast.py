"""An application's tests with amqpfast's pytest fixtures, against a real RabbitMQ.

Each test gets a virtual host of its own (``amqp_vhost_url``), deleted
afterwards, so queue names need not be unique and nothing is left behind.
``amqp_proxy`` sits between the application and the broker and breaks the
network on demand: here the application, on ``connect_robust``, survives a cut.

Run: ``pytest examples/testing/test_with_amqpfast.py`` (the plugin comes with
amqpfast; with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``, add ``-p asyncio -p amqpfast``).
The broker: ``$AMQPFAST_TEST_URL``, default amqp://guest:guest@127.0.0.1:5672/.
"""

from __future__ import annotations

import asyncio

import pytest

import amqpfast
from amqpfast.testing import TCPProxy, with_query

# pytest-asyncio's strict mode (its default) runs only marked async tests;
# the mark changes nothing in auto mode.
pytestmark = pytest.mark.asyncio

# ------------------------------------------------ the application under test


async def start_order_worker(channel: amqpfast.Channel, processed: asyncio.Queue[str]) -> None:
    """Consume the "orders" queue: each order's id goes to ``processed`` once handled."""
    queue = await channel.declare_queue("orders", durable=True)

    async def on_order(message: amqpfast.IncomingMessage) -> None:
        async with message.process():
            await processed.put(message.body.decode())

    await queue.consume(on_order)


async def place_order(channel: amqpfast.Channel, order_id: str) -> None:
    """Publish one order (persistent, confirmed by the broker)."""
    message = amqpfast.Message(order_id.encode(), delivery_mode=amqpfast.DeliveryMode.PERSISTENT)
    await channel.default_exchange.publish(message, routing_key="orders")


# ------------------------------------------------------------------ the tests


async def test_an_order_is_processed(amqp_channel: amqpfast.Channel) -> None:
    processed: asyncio.Queue[str] = asyncio.Queue()
    await start_order_worker(amqp_channel, processed)

    await place_order(amqp_channel, "order-1")

    assert await asyncio.wait_for(processed.get(), timeout=10) == "order-1"


async def test_the_worker_survives_a_network_cut(amqp_proxy: TCPProxy, amqp_vhost_url: str) -> None:
    # through the proxy; reconnect quickly (the default waits 5 seconds)
    url = with_query(amqp_proxy.url(amqp_vhost_url), reconnect_interval=0.1)
    connection = await amqpfast.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        processed: asyncio.Queue[str] = asyncio.Queue()
        await start_order_worker(channel, processed)
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda _connection: reconnected.set())

        amqp_proxy.cut()  # the network drops every connection to the broker
        await asyncio.wait_for(reconnected.wait(), timeout=15)

        # the channel, queue and consumer were restored by connect_robust
        await place_order(channel, "order-after-the-cut")
        assert await asyncio.wait_for(processed.get(), timeout=10) == "order-after-the-cut"
