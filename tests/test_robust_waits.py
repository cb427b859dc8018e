"""Which robust calls wait for the restore after a loss, and which raise at once.

Declaring and deleting exchanges and queues, binding, unbinding, consuming,
cancelling, getting, purging and QoS wait (as in aio-pika), each within its
own timeout; a publish raises ChannelInvalidStateError at once (unless
``recovery_wait``); after ``close()`` nothing waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from broker_tools import TCPProxy, close_connections_named, wait_until

import amqpfast
from amqpfast import Message, RobustChannel, RobustConnection
from amqpfast.exceptions import ChannelInvalidStateError, ChannelNotFoundEntity

HELD = 0.2  # how long a call is seen waiting before the outage ends


def robust_url(amqp_url: str, name: str) -> str:
    return f"{amqp_url}?reconnect_interval=0.1&name={name}"


async def hold_an_outage(proxy: TCPProxy, channel: RobustChannel) -> None:
    """Cut the connection and keep the reconnect from finishing until ``proxy.resume()``."""
    proxy.stall()  # the reconnect's handshake hangs in the proxy
    proxy.cut()
    await wait_until(lambda: channel.is_closed)


async def nothing(_message: Any) -> None:
    pass


async def test_declare_right_after_a_kill_waits_for_the_restore(amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(amqp_url, unique))
    try:
        channel = await connection.channel()
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda _connection, _error: lost.set())
        # rabbitmqctl returns after the reconnect: the call goes in as the loss is seen
        killing = asyncio.ensure_future(asyncio.to_thread(close_connections_named, unique))
        await asyncio.wait_for(lost.wait(), 10)
        assert channel.is_closed  # lost, not restored yet

        queue = await channel.declare_queue(f"{unique}.after", timeout=10)

        assert queue.declaration_result is not None
        assert not channel.is_closed
        assert await killing == 1
    finally:
        await connection.close()


async def test_every_waiting_call_waits_through_an_outage(proxy, amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), unique))
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{unique}.x", "topic")
        other = await channel.declare_exchange(f"{unique}.other", "topic")
        bound = await channel.declare_exchange(f"{unique}.bound", "topic")
        await bound.bind(exchange, "b")
        doomed_exchange = await channel.declare_exchange(f"{unique}.doomed-x")
        await channel.declare_exchange(f"{unique}.doomed-x2")
        queue = await channel.declare_queue(f"{unique}.q")
        await queue.bind(exchange, "k0")
        tag = await queue.consume(nothing)
        doomed_queue = await channel.declare_queue(f"{unique}.doomed-q")
        await channel.declare_queue(f"{unique}.doomed-q2")

        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "channel.declare_queue": lambda: channel.declare_queue(f"{unique}.new"),
            "channel.get_queue": lambda: channel.get_queue(queue.name),
            "channel.queue_delete": lambda: channel.queue_delete(f"{unique}.doomed-q2"),
            "channel.declare_exchange": lambda: channel.declare_exchange(f"{unique}.newx"),
            "channel.get_exchange": lambda: channel.get_exchange(exchange.name),
            "channel.exchange_delete": lambda: channel.exchange_delete(f"{unique}.doomed-x2"),
            "channel.set_qos": lambda: channel.set_qos(prefetch_count=3),
            "queue.declare": lambda: queue.declare(),
            "queue.bind": lambda: queue.bind(exchange, "k1"),
            "queue.unbind": lambda: queue.unbind(exchange, "k0"),
            "queue.consume": lambda: queue.consume(nothing),
            "queue.cancel": lambda: queue.cancel(tag),
            "queue.get": lambda: queue.get(fail=False),
            "queue.purge": lambda: queue.purge(),
            "queue.delete": lambda: doomed_queue.delete(if_unused=False, if_empty=False),
            "exchange.declare": lambda: exchange.declare(),
            "exchange.bind": lambda: other.bind(exchange, "o"),
            "exchange.unbind": lambda: bound.unbind(exchange, "b"),
            "exchange.delete": lambda: doomed_exchange.delete(),
        }
        outcomes: dict[str, str] = {}

        async def run(name: str) -> None:
            try:
                await calls[name]()
                outcomes[name] = "ok"
            except Exception as error:
                outcomes[name] = type(error).__name__

        await hold_an_outage(proxy, channel)
        tasks = [asyncio.ensure_future(run(name)) for name in calls]
        await asyncio.sleep(HELD)
        assert outcomes == {}  # all of them wait

        proxy.resume()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

        assert outcomes == dict.fromkeys(calls, "ok")
        underlay = await channel.get_underlay_channel()
        assert tag not in underlay.consumers and len(underlay.consumers) == 1
    finally:
        await connection.close()


async def test_a_publish_during_an_outage_raises_at_once(proxy, amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), unique))
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(f"{unique}.x")
        await hold_an_outage(proxy, channel)

        for publish in (
            lambda: channel.default_exchange.publish(Message(b"x"), routing_key=unique),
            lambda: exchange.publish(Message(b"x"), routing_key=unique),
        ):
            started = time.monotonic()
            with pytest.raises(ChannelInvalidStateError):
                await publish()
            assert time.monotonic() - started < 0.1
        proxy.resume()
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "call",
    (
        "channel.declare_queue",
        "channel.declare_exchange",
        "queue.bind",
        "queue.consume",
        "exchange.delete",
    ),
)
async def test_the_wait_is_bounded_by_the_call_s_timeout(proxy, amqp_url, unique, call):
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), unique))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.q")
        exchange = await channel.declare_exchange(f"{unique}.x")
        calls: dict[str, Callable[[], Awaitable[Any]]] = {
            "channel.declare_queue": lambda: channel.declare_queue(f"{unique}.new", timeout=0.3),
            "channel.declare_exchange": lambda: channel.declare_exchange(
                f"{unique}.newx", timeout=0.3
            ),
            "queue.bind": lambda: queue.bind(exchange, timeout=0.3),
            "queue.consume": lambda: queue.consume(nothing, timeout=0.3),
            "exchange.delete": lambda: exchange.delete(timeout=0.3),
        }
        await hold_an_outage(proxy, channel)

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await calls[call]()
        assert 0.25 < time.monotonic() - started < 0.8

        proxy.resume()  # nothing was sent: the channel comes back as usual
        await channel.ready(10)
        await channel.declare_queue(f"{unique}.later", timeout=5)
        underlay = await channel.get_underlay_channel()
        assert underlay.consumers == {}  # the consume given up was not recorded
    finally:
        await connection.close()


@pytest.mark.parametrize("closing", ("channel", "connection"))
async def test_close_ends_the_waits(proxy, amqp_url, unique, closing):
    connection: RobustConnection = await amqpfast.connect_robust(
        robust_url(proxy.url(amqp_url), unique)
    )
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.q")
        await hold_an_outage(proxy, channel)
        waiting = [
            asyncio.ensure_future(channel.declare_queue(f"{unique}.new")),
            asyncio.ensure_future(queue.bind("amq.direct")),
        ]
        await asyncio.sleep(HELD)
        assert not any(task.done() for task in waiting)

        await (channel if closing == "channel" else connection).close()

        done, _ = await asyncio.wait(waiting, timeout=2)
        assert len(done) == len(waiting)
        for call in waiting:
            with pytest.raises(ChannelInvalidStateError):
                call.result()
        # and nothing waits afterwards
        started = time.monotonic()
        with pytest.raises(ChannelInvalidStateError):
            await channel.declare_queue(f"{unique}.after")
        assert time.monotonic() - started < 0.1
    finally:
        proxy.resume()
        await connection.close()


async def test_after_a_channel_error_calls_raise_then_wait_for_the_reopen(amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(amqp_url, unique))
    try:
        channel = await connection.channel()
        channel.REOPEN_PAUSE = 0.2
        with pytest.raises(ChannelNotFoundEntity):
            await channel.get_queue(f"{unique}.missing")
        # at once, as in aio-pika: the channel is closed, its reopen not begun
        with pytest.raises(ChannelInvalidStateError):
            await channel.set_qos(10)

        await asyncio.sleep(0.05)  # the reopen is under way (its pause)
        started = time.monotonic()
        await channel.declare_queue(f"{unique}.q", timeout=5)
        assert time.monotonic() - started > 0.1  # waited for the reopen
        assert not channel.is_closed
    finally:
        await connection.close()
