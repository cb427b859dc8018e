"""Cancellation is never swallowed: a task cancelled while waiting in the high level ends cancelled.

Each test starts a call that has to wait (for a broker the proxy has
stalled, for a reply nobody sends, for an instance nobody gives back),
cancels it from outside and checks that the task ends cancelled within a
short bound, that no future is left waiting for it, and that what it ran on
is still usable afterwards (or closed, where aio-pika closes it too: a
synchronous method given up closes its channel, as aiormq's do).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from broker_tools import TCPProxy, wait_until

import amqpfast
from amqpfast import Channel, Connection, ExchangeType, Message
from amqpfast.core import Channel as LowChannel
from amqpfast.exceptions import AMQPConnectionError, ChannelAccessRefused
from amqpfast.patterns import RPC, Master
from amqpfast.pool import Pool, PoolInstance, PoolInvalidStateError

# how long a cancelled call may take to end, and how long a call must have
# been waiting before it is cancelled
BOUND = 1.0
SETTLE = 0.2


async def cancel_while_waiting(
    coro: Coroutine[Any, Any, Any], bound: float = BOUND
) -> asyncio.Task[Any]:
    """Run ``coro``, check it waits, cancel it; it must end cancelled within ``bound``."""
    task = asyncio.create_task(coro)
    await asyncio.sleep(SETTLE)
    assert not task.done(), f"it did not wait: {task!r}"
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=bound)
    assert task in done, "the cancel was swallowed, or it took too long"
    assert task.cancelled(), f"ended otherwise: {task!r}"
    return task


@pytest.fixture(params=["connect", "connect_robust"])
async def proxied(
    amqp_url: str, proxy: TCPProxy, request: pytest.FixtureRequest
) -> AsyncIterator[Connection]:
    """A connection through the proxy (no heartbeats: a stall must not end it)."""
    connect = getattr(amqpfast, request.param)
    connection = await connect(proxy.url(amqp_url) + "?heartbeat=0")
    try:
        yield connection
    finally:
        proxy.resume()
        await asyncio.wait_for(connection.close(), 5)


def low(channel: Channel) -> LowChannel:
    """The channel's low-level channel."""
    underlay = channel.channel_or_raise()
    assert isinstance(underlay, LowChannel)
    return underlay


def writes_paused(channel: Channel) -> bool:
    """Whether the transport under ``channel`` has asked to pause writing."""
    protocol = low(channel).connection._protocol
    return protocol is not None and protocol.paused


async def assert_usable(connection: Connection, unique: str) -> None:
    """The connection still works: a new channel declares, publishes and gets."""
    channel = await asyncio.wait_for(connection.channel(), 5)
    queue = await channel.declare_queue(f"{unique}.check", auto_delete=True)
    await channel.default_exchange.publish(Message(b"ok"), queue.name)
    message = await queue.get(timeout=5)
    assert message.body == b"ok"
    await message.ack()
    await channel.close()


# ---------------------------------------------------------------- RPC


@pytest.fixture
async def never_answers(conn: Connection, unique: str) -> AsyncIterator[RPC]:
    """An RPC whose method ``unique`` never returns (until the test ends)."""
    channel = await conn.channel()
    rpc = await RPC.create(channel, auto_delete=True)
    never = asyncio.Event()

    async def sleeper() -> None:
        await never.wait()

    await rpc.register(unique, sleeper, auto_delete=True)
    try:
        yield rpc
    finally:
        never.set()


async def test_rpc_call_waiting_for_the_reply(never_answers: RPC, unique: str):
    rpc, channel = never_answers, never_answers.channel
    await cancel_while_waiting(rpc.call(unique))
    assert rpc.futures == {}
    # the RPC and its channel go on working
    assert not channel.is_closed
    await cancel_while_waiting(rpc.call(unique))
    assert rpc.futures == {}
    await rpc.close()


async def test_rpc_call_waiting_for_the_publish_confirm(
    proxied: Connection, proxy: TCPProxy, unique: str
):
    channel = await proxied.channel()
    rpc = await RPC.create(channel, auto_delete=True)
    proxy.stall()
    await cancel_while_waiting(rpc.call(unique))
    assert rpc.futures == {}
    proxy.resume()
    # the confirm (and the return: nobody serves the method) come late, and
    # find nobody: the channel stays usable
    await wait_until(lambda: not low(channel)._confirms)
    with pytest.raises(amqpfast.exceptions.MessageProcessError):
        await asyncio.wait_for(rpc.call(unique), 5)
    await rpc.close()


async def test_rpc_close_cancels_calls_started_while_it_closes(never_answers: RPC, unique: str):
    rpc = never_answers
    # created, not started: they make their futures while close() waits for the broker
    calls = [asyncio.create_task(rpc.call(unique)) for _ in range(5)]
    await asyncio.wait_for(rpc.close(), 5)
    done, _ = await asyncio.wait(calls, timeout=BOUND)
    assert len(done) == len(calls)
    assert all(call.cancelled() for call in calls)
    assert rpc.futures == {}


# ---------------------------------------------------------------- pool


class Instance(PoolInstance):
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_pool_acquire_waiting_for_a_release():
    async def make() -> object:
        return object()

    pool: Pool[object] = Pool(make, max_size=1)
    async with pool.acquire() as held:
        await cancel_while_waiting(pool.acquire().__aenter__())
    async with asyncio.timeout(BOUND), pool.acquire() as again:
        assert again is held  # the cancelled waiter took nothing away
    await pool.close()


async def test_pool_acquire_waiting_for_its_constructor(
    amqp_url: str, proxy: TCPProxy, unique: str
):
    proxy.stall()  # connect() waits for the broker's Connection.Start
    pool: Pool[Connection] = Pool(amqpfast.connect, proxy.url(amqp_url), max_size=1)
    await cancel_while_waiting(pool.acquire().__aenter__())
    proxy.resume()
    async with asyncio.timeout(5), pool.acquire() as connection:
        await assert_usable(connection, unique)
    await pool.close()
    assert connection.is_closed


async def test_pool_close_while_a_constructor_runs():
    release = asyncio.Event()
    made: list[Instance] = []

    async def slow() -> Instance:
        await release.wait()
        made.append(Instance())
        return made[-1]

    pool: Pool[Instance] = Pool(slow, max_size=1)
    making = asyncio.create_task(pool.acquire().__aenter__())
    await asyncio.sleep(SETTLE)
    queued = asyncio.create_task(pool.acquire().__aenter__())  # waits for the constructor
    closing = asyncio.create_task(pool.close())
    await asyncio.sleep(SETTLE)
    with pytest.raises(PoolInvalidStateError):  # closing: refused at once
        pool.acquire()
    assert not closing.done()  # it waits for the instance being made, to close it
    release.set()
    await asyncio.wait_for(closing, BOUND)
    assert await making is made[0] and made[0].closed
    with pytest.raises(PoolInvalidStateError):
        await queued


# ---------------------------------------------------------------- master


async def test_master_publish_waiting_for_the_confirm(
    proxied: Connection, proxy: TCPProxy, unique: str
):
    channel = await proxied.channel()
    queue = await channel.declare_queue(unique, auto_delete=True)
    master = Master(channel)
    proxy.stall()
    await cancel_while_waiting(master.proxy.__getattr__(unique)(n=1))
    proxy.resume()
    await wait_until(lambda: not low(channel)._confirms)
    # the task was sent before the cancel: it is in the queue
    message = await queue.get(timeout=5)
    assert master.deserialize(message.body) == {"n": 1}
    await message.ack()


# ---------------------------------------------------------------- queue iterator


async def test_iterator_waiting_for_a_message(conn: Connection, unique: str):
    channel = await conn.channel()
    queue = await channel.declare_queue(unique, auto_delete=False, exclusive=True)
    iterator = queue.iterator()
    await cancel_while_waiting(iterator.__anext__())
    # the cancel closed the iterator: its consumer is gone, the channel is fine
    assert iterator._closed.done() and iterator.consumer_tag is None
    declared = await queue.declare()
    assert declared.consumer_count == 0
    assert iterator._waiters == []


async def test_iterator_in_async_for_with_a_stalled_broker(
    proxied: Connection, proxy: TCPProxy, unique: str
):
    channel = await proxied.channel()
    queue = await channel.declare_queue(unique, exclusive=True)

    async def consume() -> None:
        # the close a cancel starts gets as long as the wait had
        async with queue.iterator(timeout=0.3) as messages:
            while True:
                try:
                    await anext(messages)
                except TimeoutError:
                    continue

    task = asyncio.create_task(consume())
    await asyncio.sleep(SETTLE)
    proxy.stall()  # the Basic.Cancel of the close gets no answer
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    assert task in done and task.cancelled()


async def test_iterator_cancelled_twice_stops_waiting_for_its_close(
    proxied: Connection, proxy: TCPProxy, unique: str
):
    channel = await proxied.channel()
    queue = await channel.declare_queue(unique, exclusive=True)
    iterator = queue.iterator()  # no timeout: the close may take DEFAULT_CLOSE_TIMEOUT
    await iterator.consume()
    task = asyncio.create_task(iterator.__anext__())
    await asyncio.sleep(SETTLE)
    proxy.stall()
    task.cancel()
    await asyncio.sleep(SETTLE)
    assert not task.done()  # closing: waiting for the broker's CancelOk
    task.cancel()  # the second cancel does not wait any longer
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    assert task in done and task.cancelled()
    closing = iterator._QueueIterator__closing  # type: ignore[attr-defined]
    assert not closing.done()  # goes on in the background
    proxy.resume()
    await asyncio.wait_for(iterator.__aexit__(None, None, None), 5)
    assert iterator._closed.done()


# ---------------------------------------------------------------- publish


async def test_exchange_publish_waiting_for_the_confirm(
    proxied: Connection, proxy: TCPProxy, unique: str
):
    channel = await proxied.channel()
    queue = await channel.declare_queue(unique, exclusive=True)
    proxy.stall()
    await cancel_while_waiting(channel.default_exchange.publish(Message(b"1"), queue.name))
    proxy.resume()
    await wait_until(lambda: not low(channel)._confirms)  # the late confirm found nobody
    await asyncio.wait_for(channel.default_exchange.publish(Message(b"2"), queue.name), 5)
    bodies = [(await queue.get(timeout=5)).body for _ in range(2)]
    assert bodies == [b"1", b"2"]  # sent before the cancel: it was published


async def test_exchange_publish_with_timeout_cancelled(
    proxied: Connection, proxy: TCPProxy, unique: str
):
    channel = await proxied.channel()
    proxy.stall()
    publish = channel.default_exchange.publish(Message(b"1"), unique, timeout=30)
    await cancel_while_waiting(publish)
    proxy.resume()
    await wait_until(lambda: not low(channel)._confirms)
    assert not channel.is_closed


async def test_exchange_publish_waiting_for_the_socket(
    proxied: Connection, proxy: TCPProxy, unique: str
):
    channel = await proxied.channel(publisher_confirms=False)
    queue = await channel.declare_queue(unique, exclusive=True)
    body = bytes(1 << 20)
    proxy.stall()  # the socket buffers fill: publish waits for the transport to drain

    async def flood() -> None:
        while True:
            await channel.default_exchange.publish(Message(body), queue.name)
            await asyncio.sleep(0)  # let the writes go out

    task = asyncio.create_task(flood())
    async with asyncio.timeout(5):
        while not writes_paused(channel):
            await asyncio.sleep(0.01)
    await asyncio.sleep(SETTLE)
    assert not task.done()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=BOUND)
    assert task in done and task.cancelled()
    proxy.resume()
    await asyncio.wait_for(queue.purge(), 10)
    assert not channel.is_closed


async def test_handler_cancelled_by_its_channel_close_sees_the_close_error(
    conn: Connection, unique: str
):
    # Publishing to an internal exchange makes the broker close the channel
    # (403). The handler publishing there is cancelled with the channel's
    # other handlers; its publish raises the broker's error, not CancelledError.
    admin = await conn.channel()
    internal = await admin.declare_exchange(
        f"{unique}.internal", ExchangeType.FANOUT, internal=True, auto_delete=True
    )
    source = await admin.declare_queue(f"{unique}.source", auto_delete=True)
    consumer_connection = await amqpfast.connect(conn.url)
    try:
        channel = await consumer_connection.channel()
        exchange = await channel.get_exchange(internal.name, ensure=False)
        queue = await channel.get_queue(source.name, ensure=False)
        raised: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

        async def handle(message: amqpfast.IncomingMessage) -> None:
            try:
                await exchange.publish(Message(b"reply"), "reply")
            except BaseException as error:
                raised.set_result(error)
                raise

        await queue.consume(handle)
        await admin.default_exchange.publish(Message(b"request"), source.name)
        error = await asyncio.wait_for(raised, 5)
        assert isinstance(error, ChannelAccessRefused)
    finally:
        await consumer_connection.close()


# ---------------------------------------------------------------- synchronous methods


@pytest.mark.parametrize("call", ["declare_queue", "declare_exchange", "bind", "get", "purge"])
async def test_synchronous_method_waiting_for_the_broker(
    proxied: Connection, proxy: TCPProxy, unique: str, call: str
):
    channel = await proxied.channel()
    queue = await channel.declare_queue(unique, exclusive=True)
    underlay = low(channel)
    calls: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "declare_queue": lambda: channel.declare_queue(f"{unique}.2", auto_delete=True),
        "declare_exchange": lambda: channel.declare_exchange(f"{unique}.x", auto_delete=True),
        "bind": lambda: queue.bind("amq.direct", unique),
        "get": lambda: queue.get(fail=False, timeout=30),
        "purge": lambda: queue.purge(),
    }
    proxy.stall()
    await cancel_while_waiting(calls[call]())
    # given up, the method's outcome is unknown: the channel closes (as aiormq's),
    # and no call is left waiting on it
    assert channel.is_closed and not underlay._pending
    proxy.resume()
    await assert_usable(proxied, unique)


async def test_channel_close_waiting_for_close_ok(proxied: Connection, proxy: TCPProxy):
    channel = await proxied.channel()
    proxy.stall()
    await cancel_while_waiting(channel.close())
    assert channel.is_closed
    proxy.resume()
    await asyncio.wait_for(proxied.channel(), 5)


async def test_connection_close_waiting_for_close_ok(amqp_url: str, proxy: TCPProxy):
    connection = await amqpfast.connect(proxy.url(amqp_url) + "?heartbeat=0")
    await connection.channel()
    proxy.stall()
    await cancel_while_waiting(connection.close())
    assert connection.is_closed
    proxy.resume()


@pytest.mark.parametrize("kind", [Connection, amqpfast.RobustConnection])
async def test_close_ends_a_connect_waiting_for_the_handshake(
    amqp_url: str, proxy: TCPProxy, kind: type[Connection]
):
    proxy.stall()  # the broker's Connection.Start never arrives
    connection = kind(proxy.url(amqp_url))
    connecting = asyncio.create_task(connection.connect(timeout=30))
    await asyncio.sleep(SETTLE)
    await asyncio.wait_for(connection.close(), BOUND)
    with pytest.raises(AMQPConnectionError, match="closed while connecting"):
        await asyncio.wait_for(connecting, BOUND)
    assert connection.is_closed
    assert connection.transport is None
    proxy.resume()
    await asyncio.sleep(SETTLE)  # a handshake that went on would finish now
    assert connection.transport is None
