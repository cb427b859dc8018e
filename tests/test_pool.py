"""amqpfast.pool.Pool: limits, reuse, closing; pools of real connections and channels."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import Counter

import pytest

import amqpfast
import amqpfast.pool
from amqpfast import Channel, Connection, Message
from amqpfast.pool import Pool, PoolInstance, PoolInvalidStateError


class Instance(PoolInstance):
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = 0

    async def close(self) -> None:
        self.closed += 1


class Factory:
    """Makes numbered :class:`Instance` objects and remembers them."""

    def __init__(self) -> None:
        self.made: list[Instance] = []

    async def __call__(self) -> Instance:
        await asyncio.sleep(0)
        instance = Instance(len(self.made))
        self.made.append(instance)
        return instance


@pytest.mark.parametrize("max_size", [1, 3, 10])
async def test_max_size_limits_concurrency_and_instances(max_size: int):
    factory = Factory()
    pool = Pool(factory, max_size=max_size)
    in_use: set[Instance] = set()
    most_in_use = 0
    uses: Counter[int] = Counter()

    async def user() -> None:
        nonlocal most_in_use
        async with pool.acquire() as instance:
            assert instance not in in_use  # never handed out twice at once
            in_use.add(instance)
            most_in_use = max(most_in_use, len(in_use))
            await asyncio.sleep(0.005)
            uses[instance.number] += 1
            in_use.discard(instance)

    await asyncio.gather(*(user() for _ in range(40)))

    assert len(factory.made) == max_size
    assert most_in_use == max_size
    assert sum(uses.values()) == 40 and set(uses) == set(range(max_size))
    await pool.close()


async def test_without_max_size_makes_one_per_concurrent_user():
    factory = Factory()
    pool = Pool(factory)

    async def user() -> None:
        async with pool.acquire():
            await asyncio.sleep(0.01)

    await asyncio.gather(*(user() for _ in range(15)))
    assert len(factory.made) == 15
    await asyncio.gather(*(user() for _ in range(15)))
    assert len(factory.made) == 15  # all reused
    await pool.close()


async def test_released_instance_is_reused():
    factory = Factory()
    pool = Pool(factory, max_size=5)
    for _ in range(3):
        async with pool.acquire() as instance:
            assert instance is factory.made[0]
    assert len(factory.made) == 1
    await pool.close()


async def test_constructor_arguments():
    async def make(a: int, b: int, *, c: int) -> tuple[int, int, int]:
        return a, b, c

    pool = Pool(make, 1, 2, c=3, max_size=1)
    async with pool.acquire() as value:
        assert value == (1, 2, 3)
    await pool.close()  # plain values: nothing to close


async def test_failed_constructor_is_not_counted():
    attempts = 0

    async def flaky() -> Instance:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("broker away")
        return Instance(attempts)

    pool = Pool(flaky, max_size=1)
    with pytest.raises(ConnectionError):
        async with pool.acquire():
            pass
    async with pool.acquire() as instance:
        assert instance.number == 2
    await pool.close()


async def test_close_closes_every_instance_and_refuses_more():
    factory = Factory()
    pool = Pool(factory, max_size=3)
    release = asyncio.Event()

    async def holder() -> None:
        async with pool.acquire():
            await release.wait()

    holders = [asyncio.create_task(holder()) for _ in range(3)]
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(holder())  # waits: all three are taken
    await asyncio.sleep(0.01)
    assert not waiter.done()

    assert not pool.is_closed
    await pool.close()
    assert pool.is_closed
    assert [instance.closed for instance in factory.made] == [1, 1, 1]
    with pytest.raises(PoolInvalidStateError):
        await waiter
    release.set()
    await asyncio.gather(*holders)  # giving back to a closed pool is no error
    with pytest.raises(PoolInvalidStateError):
        pool.acquire()
    with pytest.raises(PoolInvalidStateError):
        pool.put(factory.made[0])
    await pool.close()  # twice: nothing more happens
    assert [instance.closed for instance in factory.made] == [1, 1, 1]


@pytest.mark.parametrize("released_before_close", [False, True])
async def test_close_wakes_those_waiting_for_a_release(released_before_close: bool):
    factory = Factory()
    pool = Pool(factory, max_size=1)
    held = await pool.acquire().__aenter__()
    waiters = [asyncio.create_task(pool.acquire().__aenter__()) for _ in range(3)]
    await asyncio.sleep(0.01)
    if released_before_close:  # the first waiter is woken for it, but close() comes first
        pool.put(held)
    await pool.close()
    done, _ = await asyncio.wait(waiters, timeout=1)
    assert len(done) == 3
    assert all(isinstance(waiter.exception(), PoolInvalidStateError) for waiter in waiters)
    assert held.closed == 1


async def test_cancelled_waiter_loses_no_instance():
    factory = Factory()
    pool = Pool(factory, max_size=1)
    async with pool.acquire():
        waiter = asyncio.create_task(pool.acquire().__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(1), pool.acquire() as instance:
        assert instance is factory.made[0]
    await pool.close()


async def test_failing_instance_close_is_logged(caplog: pytest.LogCaptureFixture):
    class Broken(Instance):
        async def close(self) -> None:
            raise RuntimeError("cannot close")

    async def make() -> Instance:
        return Broken(0)

    pool = Pool(make)
    async with pool.acquire():
        pass
    with caplog.at_level(logging.WARNING, logger="amqpfast.pool"):
        await pool.close()
    assert "cannot close" in caplog.text
    assert pool.is_closed


async def test_pool_of_connections_closes_them(amqp_url: str):
    pool: Pool[Connection] = Pool(amqpfast.connect, amqp_url, max_size=2)
    made: set[Connection] = set()

    async def user() -> None:
        async with pool.acquire() as connection:
            made.add(connection)
            channel = await connection.channel()
            await channel.close()

    async with pool:
        await asyncio.gather(*(user() for _ in range(6)))
        assert len(made) == 2
        assert not any(connection.is_closed for connection in made)
    assert pool.is_closed
    assert all(connection.is_closed for connection in made)


async def test_channel_pool_over_connection_pool(amqp_url: str, unique: str):
    connections: Pool[Connection] = Pool(amqpfast.connect, amqp_url, max_size=2)

    async def get_channel() -> Channel:
        async with connections.acquire() as connection:
            return await connection.channel()

    channels: Pool[Channel] = Pool(get_channel, max_size=4)
    used: set[Channel] = set()

    async def publish(number: int) -> None:
        async with channels.acquire() as channel:
            used.add(channel)
            await channel.default_exchange.publish(Message(f"{number}".encode()), unique)

    async with connections, channels:
        async with channels.acquire() as channel:
            queue = await channel.declare_queue(unique, auto_delete=True)
        await asyncio.gather(*(publish(number) for number in range(30)))

        received: list[int] = []
        async with channels.acquire() as channel:
            queue = await channel.get_queue(unique)
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    received.append(int(message.body))
                    if len(received) == 30:
                        break
        assert sorted(received) == list(range(30))
        assert 1 < len(used) <= 4
    assert all(channel.is_closed for channel in used)


def test_same_names_and_signatures_as_aio_pika():
    reference = pytest.importorskip("aio_pika.pool")
    for name in ("Pool", "PoolInstance", "PoolInvalidStateError", "PoolItemContextManager"):
        theirs, ours = getattr(reference, name), getattr(amqpfast.pool, name)
        for member, value in vars(theirs).items():
            if member.startswith("_") and member not in ("__init__", "__aenter__", "__aexit__"):
                continue
            assert hasattr(ours, member), f"{name}.{member}"
            if not callable(value):
                continue
            their_parameters = inspect.signature(value).parameters.values()
            our_parameters = inspect.signature(getattr(ours, member)).parameters.values()
            # ours may take more: Pool passes **kwargs on to the constructor
            assert [(p.name, p.kind, p.default) for p in our_parameters][
                : len(their_parameters)
            ] == [(p.name, p.kind, p.default) for p in their_parameters], f"{name}.{member}"
