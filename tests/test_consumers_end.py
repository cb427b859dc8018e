"""Every consumer learns that it is over, however its Queue object was made.

A queue comes from ``declare_queue``, ``get_queue`` (checked or not) or the
constructor. On a plain connection its iterator ends (``async for`` leaves
its loop, as in aio-pika) and its close callbacks (how a callback consumer
hears of it) are called when the channel is closed by the client, by the
broker for an error, or with its connection, closed or cut. On a robust
connection the consumers of every such queue come back after a loss or a
channel error, and end with ``close()``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from broker_tools import TCPProxy, wait_until

import amqpfast
from amqpfast import Channel, Connection, IncomingMessage, Message, Queue
from amqpfast.exceptions import ChannelNotFoundEntity

WAYS = ("declare_queue", "get_queue", "get_queue-unchecked", "constructor")


def robust_url(proxy: TCPProxy, amqp_url: str, name: str) -> str:
    return f"{proxy.url(amqp_url)}?reconnect_interval=0.1&name={name}"


async def obtain(channel: Channel, way: str, name: str) -> Queue:
    """The queue ``name`` (made here) as a Queue object obtained the ``way`` given."""
    if way == "declare_queue":
        return await channel.declare_queue(name)
    robust = {"robust": False} if isinstance(channel, amqpfast.RobustChannel) else {}
    await channel.declare_queue(name, **robust)  # exists; this object is dropped
    if way == "get_queue":
        return await channel.get_queue(name)
    if way == "get_queue-unchecked":
        return await channel.get_queue(name, ensure=False)
    return channel.QUEUE_CLASS(channel, name, False, False, False, None)


class Consumers:
    """An iterator and a callback consumer on one queue, and what they heard."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.iterated: list[bytes] = []
        self.called: list[bytes] = []
        self.closes: list[BaseException | None] = []
        queue.close_callbacks.add(self._on_close)

    def _on_close(self, _queue: Any, error: BaseException | None) -> None:
        self.closes.append(error)

    async def start(self) -> Consumers:
        iterator = self.queue.iterator()
        await iterator.consume()
        self.iterating = asyncio.ensure_future(self._iterate(iterator))
        await self.queue.consume(self._on_message)
        return self

    async def _iterate(self, iterator: Any) -> str:
        async for message in iterator:
            self.iterated.append(message.body)
            await message.ack()
        return "ended"

    async def _on_message(self, message: IncomingMessage) -> None:
        self.called.append(message.body)
        await message.ack()

    async def ended(self) -> None:
        """The iteration ended (without an error) and the close callbacks were called."""
        assert await asyncio.wait_for(asyncio.shield(self.iterating), 5) == "ended"
        await wait_until(lambda: bool(self.closes))

    async def both_receive(self, channel: Channel) -> None:
        """Publish until the iterator and the callback each got a message."""
        async with asyncio.timeout(10):
            while not (self.iterated and self.called):
                await channel.default_exchange.publish(Message(b"m"), routing_key=self.queue.name)
                await asyncio.sleep(0.02)


async def lose_the_channel(how: str, channel: Channel, connection: Connection, proxy: TCPProxy):
    if how == "channel-close":
        await channel.close()
    elif how == "channel-error":
        with pytest.raises(ChannelNotFoundEntity):
            await channel.get_queue(f"{channel.number}.missing-{id(channel)}")
    elif how == "connection-close":
        await connection.close()
    else:
        proxy.cut()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    "how", ("channel-close", "channel-error", "connection-close", "connection-cut")
)
async def test_plain_consumers_end(proxy, amqp_url, unique, way, how):
    connection = await amqpfast.connect(proxy.url(amqp_url))
    try:
        channel = await connection.channel()
        consumers = await Consumers(await obtain(channel, way, unique)).start()

        await lose_the_channel(how, channel, connection, proxy)

        await consumers.ended()
        assert len(consumers.closes) == 1
        if how == "channel-error":
            assert isinstance(consumers.closes[0], ChannelNotFoundEntity)
    finally:
        await connection.close()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("how", ("connection-cut", "channel-error"))
async def test_robust_consumers_come_back_then_end_with_close(proxy, amqp_url, unique, way, how):
    connection = await amqpfast.connect_robust(robust_url(proxy, amqp_url, unique))
    try:
        channel = await connection.channel()
        channel.REOPEN_PAUSE = 0.05
        consumers = await Consumers(await obtain(channel, way, unique)).start()

        await lose_the_channel(how, channel, connection, proxy)
        await wait_until(lambda: bool(consumers.closes))  # they heard of the loss
        await channel.ready(10)

        assert not consumers.iterating.done()
        await consumers.both_receive(channel)  # both came back
    finally:
        await connection.close()
    await consumers.ended()


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("how", ("channel-close", "connection-close"))
async def test_robust_consumers_end_with_close(proxy, amqp_url, unique, way, how):
    connection = await amqpfast.connect_robust(robust_url(proxy, amqp_url, unique))
    try:
        channel = await connection.channel()
        consumers = await Consumers(await obtain(channel, way, unique)).start()

        await lose_the_channel(how, channel, connection, proxy)

        await consumers.ended()
        assert len(consumers.closes) == 1
    finally:
        await connection.close()


@pytest.mark.parametrize("unrestored", ("queue", "consumer"))
async def test_a_robust_iterator_whose_consumer_is_not_restored_ends_on_a_loss(
    proxy, amqp_url, unique, unrestored
):
    # a queue declared with robust=False, or a consumer started with
    # robust=False, does not come back: its iterator ends instead of waiting
    connection = await amqpfast.connect_robust(robust_url(proxy, amqp_url, unique))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique, robust=unrestored != "queue")
        iterator = queue.iterator(robust=unrestored != "consumer")
        await iterator.consume()
        iterating = asyncio.ensure_future(Consumers(queue)._iterate(iterator))

        proxy.cut()

        assert await asyncio.wait_for(iterating, 5) == "ended"
        await channel.ready(10)
        underlay = await channel.get_underlay_channel()
        assert underlay.consumers == {}
    finally:
        await connection.close()


async def test_a_robust_iterator_closed_during_an_outage_is_not_restored(proxy, amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(proxy, amqp_url, unique))
    try:
        channel = await connection.channel()
        queue = await channel.get_queue((await channel.declare_queue(unique)).name, ensure=False)
        iterator = queue.iterator()
        await iterator.consume()
        proxy.stall()
        proxy.cut()
        await wait_until(lambda: channel.is_closed)

        await iterator.close()
        proxy.resume()

        await channel.ready(10)
        underlay = await channel.get_underlay_channel()
        assert underlay.consumers == {}
    finally:
        await connection.close()
