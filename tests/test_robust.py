"""connect_robust against the real broker: kills, restores, outages, closing."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest
from broker_tools import (
    TCPProxy,
    close_connections_named,
    connections_named,
    free_port,
    loop_exception_log,
    refused_port,
)

import amqpfast
from amqpfast import IncomingMessage, Message, RobustConnection
from amqpfast.exceptions import AMQPConnectionError, ChannelInvalidStateError, ChannelNotFoundEntity


def robust_url(amqp_url: str, name: str, **options: object) -> str:
    query = "&".join(f"{key}={value}" for key, value in {"name": name, **options}.items())
    return f"{amqp_url}?reconnect_interval=0.1&{query}"


async def kill_and_wait(connection: RobustConnection, name: str, timeout: float = 15) -> float:
    """Close the connection as an operator would; return the seconds until it is restored."""
    reconnected = asyncio.Event()

    def on_reconnect(_connection: object) -> None:
        reconnected.set()

    connection.reconnect_callbacks.add(on_reconnect)
    started = time.monotonic()
    try:
        assert await asyncio.to_thread(close_connections_named, name) == 1
        await asyncio.wait_for(reconnected.wait(), timeout)
    finally:
        connection.reconnect_callbacks.discard(on_reconnect)
    return time.monotonic() - started


async def test_restores_topology_and_consumers_after_a_kill(amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(amqp_url, unique))
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=7)
        source = await channel.declare_exchange(f"{unique}.src", "fanout", auto_delete=True)
        target = await channel.declare_exchange(f"{unique}.dst", "direct", auto_delete=True)
        await target.bind(source)
        named = await channel.declare_queue(f"{unique}.named", auto_delete=True)
        server_named = await channel.declare_queue(exclusive=True)
        await named.bind(target, routing_key="")
        await server_named.bind(source)
        received: dict[str, list[bytes]] = {"named": [], "server": []}

        def collector(key: str):
            async def on_message(message: IncomingMessage) -> None:
                async with message.process():
                    received[key].append(message.body)

            return on_message

        named_tag = await named.consume(collector("named"))
        server_tag = await server_named.consume(collector("server"))
        old_name = server_named.name

        await kill_and_wait(connection, unique)

        # named here, not by the broker, so that it can be declared again
        assert old_name.startswith("amq_")
        assert server_named.name == old_name
        await source.publish(Message(b"after the kill"), routing_key="")
        for _ in range(50):
            if received["named"] and received["server"]:
                break
            await asyncio.sleep(0.1)
        assert received == {"named": [b"after the kill"], "server": [b"after the kill"]}
        underlay = await channel.get_underlay_channel()
        assert set(underlay.consumers) == {named_tag, server_tag}  # same tags


async def test_publishing_during_an_outage_fails_at_once(proxy, amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), unique))
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    proxy.stall()
    proxy.cut()  # the client notices at once, the broker a little later
    await asyncio.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(ChannelInvalidStateError):
        await channel.default_exchange.publish(Message(b"x"), routing_key=queue.name)
    assert time.monotonic() - started < 0.5
    proxy.resume()
    await connection.close()


async def test_close_stops_reconnecting_for_good(amqp_url, unique):
    with loop_exception_log(asyncio.get_running_loop()) as problems:
        connection = await amqpfast.connect_robust(robust_url(amqp_url, unique))
        channel = await connection.channel()
        await channel.declare_queue(exclusive=True)
        await connection.close()
        await asyncio.sleep(0.5)  # longer than the reconnect interval
        gc.collect()
    assert problems == []
    assert connection.is_closed and channel.is_closed
    assert await asyncio.to_thread(connections_named, unique) == []
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert others == []


async def test_close_during_an_outage(proxy, amqp_url, unique):
    connection = await amqpfast.connect_robust(robust_url(proxy.url(amqp_url), unique))
    await proxy.close()  # the broker is unreachable from now on
    await asyncio.sleep(0.3)
    assert connection.reconnecting
    await asyncio.wait_for(connection.close(), 5)
    assert connection.is_closed and not connection.reconnecting


async def test_fail_fast_raises_on_the_first_connect():
    with refused_port() as port, pytest.raises(AMQPConnectionError):
        await amqpfast.connect_robust(f"amqp://guest:guest@127.0.0.1:{port}/", timeout=5)


async def test_without_fail_fast_connect_waits_for_the_broker(amqp_url, unique):
    port = free_port()
    url = robust_url(amqp_url.replace(":5672/", f":{port}/"), unique, fail_fast="no")
    connecting = asyncio.ensure_future(amqpfast.connect_robust(url))
    await asyncio.sleep(0.5)
    assert not connecting.done()
    proxy = await TCPProxy().start(port)  # the "broker" comes up
    try:
        connection = await asyncio.wait_for(connecting, 10)
        channel = await connection.channel()
        assert (await channel.declare_queue(exclusive=True)).name
        await connection.close()
    finally:
        await proxy.close()


async def test_deleted_entities_do_not_come_back(amqp_url, unique):
    async with await amqpfast.connect_robust(robust_url(amqp_url, unique)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.gone")
        exchange = await channel.declare_exchange(f"{unique}.gone")
        await queue.delete(if_unused=False, if_empty=False)
        await exchange.delete()

        await kill_and_wait(connection, unique)

        probe = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await probe.declare_queue(f"{unique}.gone", passive=True, robust=False)
        probe = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await probe.declare_exchange(f"{unique}.gone", passive=True, robust=False)


async def test_queue_iterator_goes_on_after_a_kill(amqp_url, unique):
    async with await amqpfast.connect_robust(robust_url(amqp_url, unique)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.iter", auto_delete=True)
        bodies: list[bytes] = []

        async def read() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        bodies.append(message.body)
                    if len(bodies) == 2:
                        return

        reader = asyncio.ensure_future(read())
        await channel.default_exchange.publish(Message(b"one"), routing_key=queue.name)
        await asyncio.sleep(0.3)
        await kill_and_wait(connection, unique)
        await channel.default_exchange.publish(Message(b"two"), routing_key=queue.name)
        await asyncio.wait_for(reader, 10)
        assert bodies == [b"one", b"two"]


async def test_a_channel_closed_by_the_broker_is_reopened(amqp_url, unique):
    async with await amqpfast.connect_robust(robust_url(amqp_url, unique)) as connection:
        channel = await connection.channel()
        channel.REOPEN_PAUSE = 0.1
        queue = await channel.declare_queue(exclusive=True)
        reopened = asyncio.Event()
        channel.reopen_callbacks.add(lambda _channel: reopened.set())

        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(f"{unique}.missing", passive=True)
        await asyncio.wait_for(reopened.wait(), 5)

        assert not channel.is_closed
        await channel.default_exchange.publish(Message(b"still works"), routing_key=queue.name)
        assert (await queue.get(timeout=5)).body == b"still works"


async def test_silent_peer_detected_and_recovered(proxy, amqp_url, unique):
    url = robust_url(proxy.url(amqp_url), unique, heartbeat=1)
    async with await amqpfast.connect_robust(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.hb", auto_delete=True)
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda _connection: reconnected.set())
        loop = asyncio.get_running_loop()

        proxy.stall()
        stalled = loop.time()
        while connection.connected.is_set():
            await asyncio.sleep(0.05)
        detected = loop.time() - stalled
        proxy.cut()
        proxy.resume()
        await asyncio.wait_for(reconnected.wait(), 15)

        assert detected <= 2 * 1 + 1  # within 2 x heartbeat + 1 s
        await channel.default_exchange.publish(Message(b"back"), routing_key=queue.name)
        assert (await queue.get(timeout=5)).body == b"back"


async def test_update_secret_survives_a_reconnect(amqp_url, unique):
    async with await amqpfast.connect_robust(robust_url(amqp_url, unique)) as connection:
        await connection.update_secret("guest", reason="rotation")
        await kill_and_wait(connection, unique)
        assert connection.url.password == "guest"
        channel = await connection.channel()
        assert (await channel.declare_queue(exclusive=True)).name


async def test_several_urls_are_tried_in_turn(amqp_url, unique):
    with refused_port() as port:
        # the options (reconnect_interval ...) are read from the first URL
        dead = robust_url(amqp_url.replace(":5672/", f":{port}/"), unique)
        alive = robust_url(amqp_url, unique)
        connection = await amqpfast.connect_robust([dead, alive], timeout=5)
        await _use_after_kills(connection, unique)


async def _use_after_kills(connection: RobustConnection, unique: str) -> None:
    async with connection:
        assert connection.url.port == 5672  # the second one answered
        channel = await connection.channel()
        assert (await channel.declare_queue(exclusive=True)).name
        await kill_and_wait(connection, unique)  # and again after a kill
        assert connection.url.port == 5672


async def test_fail_fast_tries_every_url_once():
    with refused_port() as first, refused_port() as second:
        urls = [f"amqp://guest:guest@127.0.0.1:{port}/" for port in (first, second)]
        with pytest.raises(AMQPConnectionError):
            await amqpfast.connect_robust(urls, timeout=5)


async def test_publish_can_wait_for_the_reconnect(amqp_url, unique):
    async with await amqpfast.connect_robust(robust_url(amqp_url, unique)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.wait", auto_delete=True)
        channel.recovery_wait = 15
        lost = asyncio.Event()
        connection.close_callbacks.add(lambda _connection, _error: lost.set())
        await asyncio.to_thread(close_connections_named, unique)
        # a lost connection is tried again at once: polling `connected` may
        # miss the outage; the close callbacks hear of it
        await asyncio.wait_for(lost.wait(), 10)

        # the channel is down: this publish waits for the restore, then goes out
        await channel.default_exchange.publish(Message(b"patient"), routing_key=queue.name)

        assert (await queue.get(timeout=5)).body == b"patient"


async def test_acking_a_message_from_before_the_kill_fails_clearly(amqp_url, unique):
    async with await amqpfast.connect_robust(robust_url(amqp_url, unique)) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.old", auto_delete=True)
        await channel.default_exchange.publish(Message(b"old"), routing_key=queue.name)
        old = await queue.get(timeout=5)

        await kill_and_wait(connection, unique)

        with pytest.raises(ChannelInvalidStateError):
            await old.ack()
        again = await queue.get(timeout=5)  # redelivered on the new connection
        assert again.body == b"old" and again.redelivered
        await again.ack()


async def test_a_consumer_cancelled_by_the_broker_comes_back(amqp_url, unique):
    async with await amqpfast.connect_robust(robust_url(amqp_url, unique)) as connection:
        channel = await connection.channel()
        doomed = await channel.declare_queue(f"{unique}.doomed")
        steady = await channel.declare_queue(f"{unique}.steady", auto_delete=True)
        got: list[bytes] = []

        async def on_message(message: IncomingMessage) -> None:
            async with message.process():
                got.append(message.body)

        await doomed.consume(on_message)
        await steady.consume(on_message)
        async with await amqpfast.connect(amqp_url) as other:
            admin = await other.channel()
            await admin.queue_delete(doomed.name)
            await asyncio.sleep(0.3)
            await channel.default_exchange.publish(Message(b"steady"), routing_key=steady.name)
            await asyncio.sleep(0.3)
            assert got == [b"steady"] and not channel.is_closed  # the others go on

            await admin.declare_queue(doomed.name)  # the queue exists again
            for _ in range(50):
                await asyncio.sleep(0.1)
                if (await admin.declare_queue(doomed.name, passive=True)).declaration_result:
                    result = await admin.declare_queue(doomed.name, passive=True)
                    if result.declaration_result.consumer_count == 1:  # type: ignore[union-attr]
                        break
            await admin.default_exchange.publish(Message(b"back"), routing_key=doomed.name)
            for _ in range(50):
                if b"back" in got:
                    break
                await asyncio.sleep(0.1)
            await admin.queue_delete(doomed.name)
        assert got == [b"steady", b"back"]


async def test_exclusive_queue_held_by_the_old_connection_is_retried(
    proxy, amqp_url, unique, caplog
):
    url = robust_url(proxy.url(amqp_url), unique, heartbeat=1)
    async with await amqpfast.connect_robust(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{unique}.mine", exclusive=True)
        got: list[bytes] = []
        await queue.consume(lambda message: got.append(message.body), no_ack=True)
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda _connection: reconnected.set())

        # the client loses its side; the broker holds the old connection (and
        # the exclusive queue) until its heartbeat check gives up
        proxy.cut_clients()
        await asyncio.wait_for(reconnected.wait(), 30)

        assert any("RESOURCE_LOCKED" in record.getMessage() for record in caplog.records)
        await channel.default_exchange.publish(Message(b"mine again"), routing_key=queue.name)
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.1)
        assert got == [b"mine again"]


async def test_a_changed_declaration_is_retried_at_the_reconnect_pace(amqp_url, unique, caplog):
    url = robust_url(amqp_url, unique)
    async with await amqpfast.connect_robust(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(f"{unique}.args", arguments={"x-max-length": 10})
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda _connection: reconnected.set())
        async with await amqpfast.connect(amqp_url) as other:
            admin = await other.channel()
            await admin.queue_delete(f"{unique}.args")
            # someone declares it differently: the restore meets 406
            await admin.declare_queue(f"{unique}.args", arguments={"x-max-length": 99})
            await asyncio.to_thread(close_connections_named, unique)
            await asyncio.sleep(2.0)
            failures = [r for r in caplog.records if "PRECONDITION_FAILED" in r.getMessage()]
            assert 1 <= len(failures) <= 8  # backing off: 0.1, 0.2, 0.4 ... not a busy loop
            assert not reconnected.is_set()

            await admin.queue_delete(f"{unique}.args")  # the conflict goes away
            await asyncio.wait_for(reconnected.wait(), 10)
        probe = await connection.channel()
        declared = await probe.declare_queue(f"{unique}.args", passive=True, robust=False)
        assert declared.declaration_result is not None
        await probe.queue_delete(f"{unique}.args")
