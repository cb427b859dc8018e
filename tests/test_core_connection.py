"""The low-level connection against the real broker: handshake, channels, closing."""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import close_connections_named, loop_exception_log, rabbitmqctl

from amqpfast import codec
from amqpfast.core import Connection, connect
from amqpfast.exceptions import (
    AMQPConnectionError,
    AuthenticationError,
    ChannelInvalidStateError,
    ConnectionClosed,
    ConnectionForced,
    ConnectionNotAllowed,
    ProbableAuthenticationError,
)


async def test_handshake_negotiates_and_names_the_connection(amqp_url, unique):
    conn = await connect(f"{amqp_url}?name={unique}&heartbeat=7&frame_max=65536&channel_max=10")
    try:
        assert conn.is_opened and not conn.is_closed
        assert conn.server_properties["product"] == "RabbitMQ"
        assert conn.server_capabilities["publisher_confirms"] is True
        assert (conn.heartbeat, conn.frame_max, conn.channel_max) == (7, 65536, 10)
        pids = await asyncio.to_thread(close_connections_named, f"absent-{unique}")
        assert pids == 0
    finally:
        await conn.close()
    assert conn.is_closed


async def test_client_properties_name_the_implementation(amqp_url, unique):
    from broker_tools import rabbitmqctl

    async with await connect(f"{amqp_url}?name={unique}"):
        listing = await asyncio.to_thread(
            rabbitmqctl, "list_connections", "client_properties", "-q", "--formatter", "json"
        )
    assert f'"connection_name","longstr","{unique}"' in listing.replace(" ", "")
    assert f"codec: {codec.IMPLEMENTATION}" in listing


async def test_wrong_password_is_an_authentication_error(amqp_url):
    bad = amqp_url.replace("guest:guest@", "guest:wrong@")
    with pytest.raises(ProbableAuthenticationError):
        await connect(bad)


async def test_unknown_vhost_is_refused(amqp_url, unique):
    with pytest.raises(ConnectionNotAllowed):
        await connect(f"amqp://guest:guest@127.0.0.1:5672/no-such-vhost-{unique}")


async def test_nothing_listening_is_a_connection_error():
    with pytest.raises(AMQPConnectionError):
        await connect("amqp://guest:guest@127.0.0.1:1/", timeout=5)


async def test_connect_timeout_on_a_silent_peer(proxy, amqp_url):
    proxy.stall()  # accepts the TCP connection, answers nothing
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await connect(proxy.url(amqp_url), timeout=0.5)
    assert asyncio.get_running_loop().time() - started < 3


async def test_amqplain_login(amqp_url):
    async with await connect(f"{amqp_url}?auth=amqplain") as conn:
        assert conn.is_opened


async def test_channel_numbers_are_allocated_and_reused(connection: Connection):
    first = await connection.channel()
    second = await connection.channel()
    assert (first.number, second.number) == (1, 2)

    await first.close()
    third = await connection.channel()
    assert third.number == 1

    chosen = await connection.channel(channel_number=7)
    assert chosen.number == 7
    with pytest.raises(ValueError):
        await connection.channel(channel_number=7)


async def test_channel_max_is_enforced(amqp_url):
    async with await connect(f"{amqp_url}?channel_max=2") as conn:
        await conn.channel()
        await conn.channel()
        with pytest.raises(AMQPConnectionError, match="in use"):
            await conn.channel()


async def test_close_closes_every_channel(connection: Connection):
    channel = await connection.channel()

    await connection.close()

    assert channel.is_closed
    with pytest.raises(ChannelInvalidStateError):
        await channel.queue_declare("", exclusive=True)
    with pytest.raises(ConnectionClosed):
        await connection.channel()


async def test_operator_close_is_typed_and_fails_waiters(amqp_url, unique):
    conn = await connect(f"{amqp_url}?name={unique}")
    channel = await conn.channel()
    queue = (await channel.queue_declare("", exclusive=True)).queue
    with loop_exception_log(asyncio.get_running_loop()) as problems:
        getter = asyncio.ensure_future(_get_until_closed(channel, queue))
        closed = await asyncio.to_thread(close_connections_named, unique, "bye from the test")
        assert closed == 1
        with pytest.raises(ConnectionForced) as caught:
            await asyncio.wait_for(conn.closing, 10)
        assert caught.value.reply_code == 320
        with pytest.raises((ConnectionForced, ChannelInvalidStateError)):
            await asyncio.wait_for(getter, 10)
    assert problems == []
    assert channel.is_closed


async def _get_until_closed(channel, queue):
    while True:
        await channel.basic_get(queue, no_ack=True, timeout=5)


async def test_proxy_cut_is_a_connection_closed(proxy, amqp_url):
    conn = await connect(proxy.url(amqp_url))
    channel = await conn.channel()

    proxy.cut()

    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(conn.closing, 10)
    with pytest.raises(ChannelInvalidStateError):
        await channel.basic_publish(b"x", routing_key="nowhere")


async def test_silent_peer_is_detected_by_heartbeat(proxy, amqp_url):
    conn = await connect(proxy.url(amqp_url) + "?heartbeat=1")
    loop = asyncio.get_running_loop()
    proxy.stall()
    started = loop.time()

    with pytest.raises(AMQPConnectionError, match="heartbeat"):
        await asyncio.wait_for(conn.closing, 10)

    # two intervals of silence, checked every half interval
    assert loop.time() - started < 3.5


async def test_a_channel_whose_opening_timed_out_is_closed_on_the_broker(proxy, amqp_url, unique):
    conn = await connect(proxy.url(amqp_url) + f"?name={unique}")
    try:
        proxy.stall()
        with pytest.raises(TimeoutError):
            await conn.channel(timeout=0.2)
        proxy.resume()  # the Open reaches the broker after all, our Close right behind it

        # The number comes free only with the broker's CloseOk: until then it stays taken.
        async with asyncio.timeout(5):
            while (channel := await conn.channel()).number != 1:
                await channel.close()
        listing = await asyncio.to_thread(
            rabbitmqctl, "list_connections", "client_properties", "channels", "-q"
        )
        line = next(row for row in listing.splitlines() if unique in row)
        assert line.rsplit("\t", 1)[1] == "1"
        assert (await channel.queue_declare("", exclusive=True)).queue
    finally:
        await conn.close()


async def test_heartbeats_keep_an_idle_connection_open(amqp_url):
    async with await connect(f"{amqp_url}?heartbeat=1") as conn:
        await asyncio.sleep(3.5)
        assert conn.is_opened
        channel = await conn.channel()
        assert (await channel.queue_declare("", exclusive=True)).queue


async def test_mechanism_the_broker_does_not_offer_is_refused(amqp_url):
    # The shared broker offers PLAIN and AMQPLAIN; EXTERNAL needs a plugin
    # that a test may not enable, so the client must say it cannot log in.
    with pytest.raises(AuthenticationError, match="EXTERNAL"):
        await connect(f"{amqp_url}?auth=external", timeout=10)


async def test_concurrent_update_secret_calls_both_finish(amqp_url):
    async with await connect(amqp_url) as conn:
        await asyncio.wait_for(
            asyncio.gather(
                conn.update_secret("guest", "first", timeout=10),
                conn.update_secret("guest", "second", timeout=10),
            ),
            15,
        )
        assert conn.is_opened
