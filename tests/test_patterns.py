"""Master/worker and RPC (amqpfast.patterns) against the real broker."""

from __future__ import annotations

import asyncio
import gzip
import importlib
import inspect
import json
import logging
import pickle
import tracemalloc
import warnings
import zlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest
from broker_tools import close_connections_named, wait_for_connection_named, wait_until
from pamqp.commands import Basic

import amqpfast
import amqpfast.patterns as patterns
from amqpfast import Channel, Connection, DeliveryMode, IncomingMessage, Message
from amqpfast.exceptions import ChannelClosed, ChannelNotFoundEntity, MessageProcessError
from amqpfast.patterns import (
    RPC,
    CompressedJsonMaster,
    DecompressionLimitError,
    JsonMaster,
    JsonRPC,
    JsonRPCError,
    Master,
    NackMessage,
    RejectMessage,
    RPCException,
    RPCMessageType,
    Worker,
)
from amqpfast.queue import Queue
from amqpfast.testing import with_query

# Some handlers here are plain functions on purpose (aio-pika accepts them,
# deprecated): the warnings they give are checked in one test, not repeated.
pytestmark = pytest.mark.filterwarnings("ignore:.*coroutine function:DeprecationWarning")


class TaskFailed(Exception):
    """A module-level exception: pickle can carry it back to the caller."""


@pytest.fixture
async def chan(conn: Connection) -> Channel:
    return await conn.channel()


async def get_message(queue: Queue, timeout: float = 5) -> IncomingMessage:
    """The next message of ``queue``, polled with Basic.Get."""
    async with asyncio.timeout(timeout):
        while True:
            message = await queue.get(fail=False)
            if message is not None:
                return message
            await asyncio.sleep(0.02)


async def dead_letter_queue(channel: Channel, name: str) -> tuple[Queue, dict[str, Any]]:
    """An exclusive queue to dead-letter into, and the arguments that send there."""
    queue = await channel.declare_queue(f"{name}.dlq", exclusive=True)
    return queue, {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue.name}


# ---------------------------------------------------------------- master/worker


async def test_tasks_spread_over_several_workers(conn: Connection, unique: str):
    queue_name = f"tasks.{unique}"
    done: list[tuple[int, int]] = []
    workers: list[Worker] = []
    for worker_number in range(3):
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=1)  # so that each worker gets a share

        async def handle(*, n: int, worker_number: int = worker_number) -> None:
            await asyncio.sleep(0.02)
            done.append((worker_number, n))

        workers.append(await Master(channel).create_worker(queue_name, handle, exclusive=True))

    master = Master(await conn.channel())
    for n in range(12):
        # dotted names through the proxy: proxy.tasks.<unique>(...)
        result = await getattr(master.proxy.tasks, unique)(n=n)
        assert isinstance(result, Basic.Ack)
    await wait_until(lambda: len(done) == 12)

    assert sorted(n for _, n in done) == list(range(12))
    assert len({worker for worker, _ in done}) > 1

    closing = [worker.close() for worker in workers]
    assert all(isinstance(task, asyncio.Task) for task in closing)  # running already
    await asyncio.gather(*closing)
    await master.create_task(queue_name, {"n": 99})
    left = await get_message(workers[0].queue)  # nobody consumes any more
    assert pickle.loads(left.body) == {"n": 99}
    await left.ack()
    assert len(done) == 12


async def test_plain_function_worker(chan: Channel, unique: str):
    calls: list[dict[str, Any]] = []
    master = JsonMaster(chan)

    def handle(**kwargs: Any) -> None:  # not a coroutine function
        calls.append(kwargs)

    worker = await master.create_worker(unique, handle, auto_delete=True)
    await master.create_task(unique, {"name": "café", "sizes": [1, 2]})
    await master.create_task(unique)  # no arguments at all
    await wait_until(lambda: len(calls) == 2)
    assert calls == [{"name": "café", "sizes": [1, 2]}, {}]
    await worker.close()


@pytest.mark.parametrize(
    ("master_class", "content_type", "decode"),
    [
        (Master, "application/python-pickle", pickle.loads),
        (JsonMaster, "application/json", json.loads),
        (
            CompressedJsonMaster,
            "application/json;compression=gzip",
            lambda body: json.loads(gzip.decompress(body)),
        ),
    ],
)
async def test_task_message_on_the_wire(
    chan: Channel,
    unique: str,
    master_class: type[Master],
    content_type: str,
    decode: Callable[[bytes], Any],
):
    queue = await chan.declare_queue(unique, exclusive=True)
    await master_class(chan).create_task(unique, {"a": 1, "b": "ü"}, message_id="m-1")

    message = await get_message(queue)
    assert message.content_type == content_type
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert message.message_id == "m-1"
    assert decode(message.body) == {"a": 1, "b": "ü"}
    await message.ack()


async def test_nack_message_with_requeue_comes_back(chan: Channel, unique: str):
    attempts: list[int] = []

    async def handle(*, n: int) -> None:
        attempts.append(n)
        if len(attempts) == 1:
            raise NackMessage(requeue=True)

    worker = await Master(chan).create_worker(unique, handle, exclusive=True)
    await Master(chan).proxy.__getattr__(unique)(n=7)
    await wait_until(lambda: len(attempts) == 2)
    await worker.close()

    assert attempts == [7, 7]
    assert await worker.queue.get(fail=False) is None  # acked the second time


@pytest.mark.parametrize(
    ("error", "master_kwargs"),
    [
        (RejectMessage(requeue=False), {}),
        (NackMessage(), {}),  # requeue is False by default
        (TaskFailed("boom"), {"requeue": False}),
    ],
    ids=["reject", "nack", "exception"],
)
async def test_settled_without_requeue_is_dead_lettered(
    chan: Channel, unique: str, error: Exception, master_kwargs: dict[str, Any]
):
    dlq, arguments = await dead_letter_queue(chan, unique)
    calls: list[int] = []

    async def handle(*, n: int) -> None:
        calls.append(n)
        raise error

    master = Master(chan, **master_kwargs)
    worker = await master.create_worker(unique, handle, exclusive=True, arguments=arguments)
    await master.create_task(unique, {"n": 1})

    dead = await get_message(dlq)
    assert pickle.loads(dead.body) == {"n": 1}
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert calls == [1]
    await worker.close()


async def test_failing_task_is_requeued_once_with_reject_on_redelivered(chan: Channel, unique: str):
    dlq, arguments = await dead_letter_queue(chan, unique)
    calls: list[int] = []

    async def handle(*, n: int) -> None:
        calls.append(n)
        raise TaskFailed(n)

    master = Master(chan, reject_on_redelivered=True)  # requeue=True by default
    worker = await master.create_worker(unique, handle, exclusive=True, arguments=arguments)
    await master.create_task(unique, {"n": 3})

    dead = await get_message(dlq)
    assert pickle.loads(dead.body) == {"n": 3}
    assert calls == [3, 3]  # the first failure requeued it, the redelivery was dropped
    await worker.close()


async def test_task_body_that_is_not_kwargs_is_rejected(chan: Channel, unique: str):
    dlq, arguments = await dead_letter_queue(chan, unique)
    calls: list[Any] = []
    master = Master(chan)
    worker = await master.create_worker(unique, calls.append, exclusive=True, arguments=arguments)

    await chan.default_exchange.publish(Message(pickle.dumps([1, 2])), unique)

    dead = await get_message(dlq)
    assert pickle.loads(dead.body) == [1, 2]
    assert calls == []
    await worker.close()


def gzip_bomb(expanded: int, chunk: int = 1 << 20) -> bytes:
    """A gzip body of ``expanded`` zero bytes (about a thousandth of that), made piecewise."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(chunk)
    pieces = [compressor.compress(zeros) for _ in range(expanded // chunk)]
    return b"".join([*pieces, compressor.flush()])


class SmallLimitMaster(CompressedJsonMaster):
    MAX_DECOMPRESSED_SIZE = 1 << 20  # 1 MiB


def test_compressed_task_bodies_are_decompressed_as_gzip_does():
    master = object.__new__(CompressedJsonMaster)  # deserialize needs no channel
    assert CompressedJsonMaster.MAX_DECOMPRESSED_SIZE == 64 * 1024 * 1024
    task = {"a": [1, "ü"], "b": "x" * 10_000}
    body = gzip.compress(json.dumps(task).encode())
    assert master.deserialize(body) == task
    # several gzip members, with zero padding between them, as gzip.decompress takes
    two = gzip.compress(b'{"a": ') + bytes(3) + gzip.compress(b"[1, 2]}") + bytes(2)
    assert master.deserialize(two) == json.loads(gzip.decompress(two)) == {"a": [1, 2]}
    with pytest.raises(EOFError):
        master.deserialize(body[:-12])  # cut inside the stream
    with pytest.raises(zlib.error):
        master.deserialize(b"not gzip at all")


def test_a_body_that_decompresses_too_far_raises_before_using_the_memory():
    master = object.__new__(SmallLimitMaster)
    exactly = gzip.compress(b'"' + b"x" * ((1 << 20) - 2) + b'"')
    assert len(master.deserialize(exactly)) == (1 << 20) - 2  # the limit itself is allowed
    with pytest.raises(DecompressionLimitError) as raised:
        master.deserialize(gzip.compress(b'"' + b"x" * ((1 << 20) - 1) + b'"'))
    assert raised.value.limit == 1 << 20
    assert raised.value.requeue is False  # a RejectMessage: the worker drops it

    bomb = gzip_bomb(256 << 20)  # 256 MiB of zeros in about 250 KiB
    assert len(bomb) < 300_000
    tracemalloc.start()
    try:
        with pytest.raises(DecompressionLimitError):
            master.deserialize(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # about the limit, never the 256 MiB


def test_the_default_limit_stops_a_bomb():
    bomb = gzip_bomb(72 << 20)  # just above 64 MiB, from about 70 KiB
    assert len(bomb) < 100_000
    with pytest.raises(DecompressionLimitError, match=str(64 << 20)):
        object.__new__(CompressedJsonMaster).deserialize(bomb)


async def test_a_worker_rejects_a_bomb_without_requeueing_it(
    chan: Channel, unique: str, caplog: pytest.LogCaptureFixture
):
    dlq, arguments = await dead_letter_queue(chan, unique)
    calls: list[dict[str, Any]] = []

    async def handle(**kwargs: Any) -> None:
        calls.append(kwargs)

    master = SmallLimitMaster(chan)  # requeue=True: only the bomb is not requeued
    worker = await master.create_worker(unique, handle, exclusive=True, arguments=arguments)
    bomb = gzip_bomb(8 << 20, chunk=1 << 16)
    with caplog.at_level(logging.ERROR, logger="amqpfast.patterns"):
        await chan.default_exchange.publish(
            Message(bomb, content_type=SmallLimitMaster.CONTENT_TYPE), unique
        )
        dead = await get_message(dlq)
    assert dead.body == bomb
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert any("decompresses to more than" in r.getMessage() for r in caplog.records)

    await master.create_task(unique, {"n": 1})  # the worker goes on
    await wait_until(lambda: calls == [{"n": 1}])
    await worker.close()


async def test_task_for_a_missing_queue_comes_back(
    chan: Channel, unique: str, caplog: pytest.LogCaptureFixture
):
    master = Master(chan)
    with caplog.at_level(logging.WARNING, logger="amqpfast.patterns"):
        result = await master.proxy.__getattr__(f"{unique}-nobody")(n=1)
        await asyncio.sleep(0.05)

    assert not isinstance(result, Basic.Ack)  # the returned message
    assert pickle.loads(result.body) == {"n": 1}
    # aio-pika's wording, with the returned message as the argument
    (record,) = [r for r in caplog.records if "Probably destination queue" in r.getMessage()]
    assert isinstance(record.args, tuple) and isinstance(record.args[0], IncomingMessage)


# ---------------------------------------------------------------- RPC


async def multiply(*, x: int, y: int) -> int:
    return x * y


def fail(*, reason: str) -> None:
    raise TaskFailed(reason)


@pytest.fixture(params=[False, True], ids=["result-queue", "direct-reply-to"])
async def rpc(chan: Channel, request: pytest.FixtureRequest) -> AsyncIterator[RPC]:
    """An RPC with a result queue of its own, or replies through direct reply-to."""
    rpc = await RPC.create(chan, auto_delete=True, direct_reply_to=request.param)
    try:
        yield rpc
    finally:
        await rpc.close()


async def test_register_call_proxy_and_unregister(rpc: RPC, unique: str):
    name = f"{unique}.multiply"
    await rpc.register(name, multiply, exclusive=True)

    def make_set(**kwargs: Any) -> frozenset[tuple[str, Any]]:  # a plain function
        return frozenset(kwargs.items())

    await rpc.register(f"{unique}.make_set", make_set, exclusive=True)

    assert await rpc.call(name, {"x": 6, "y": 7}) == 42
    assert await getattr(rpc.proxy, unique).multiply(x=2, y=3) == 6
    assert await getattr(rpc.proxy, unique).make_set(a=(1, 2)) == frozenset({("a", (1, 2))})
    results = await asyncio.gather(*(rpc.call(name, {"x": n, "y": n}) for n in range(20)))
    assert results == [n * n for n in range(20)]
    assert rpc.futures == {}

    await rpc.unregister(multiply)
    await rpc.unregister(make_set)  # a plain function unregisters by itself too
    await rpc.unregister(multiply)  # not registered: nothing happens
    assert rpc.routes == {} and rpc.consumer_tags == {} and rpc.queues == {}
    # the queue is still there, nobody serves it: the call expires
    with pytest.raises(TimeoutError):
        await rpc.call(name, {"x": 1, "y": 1}, expiration=0.2)


async def test_remote_exception_is_raised_at_the_caller(
    chan: Channel, unique: str, caplog: pytest.LogCaptureFixture
):
    rpc = await RPC.create(chan, host_exceptions=True, auto_delete=True)
    await rpc.register(unique, fail, exclusive=True)

    with (
        caplog.at_level(logging.ERROR, logger="amqpfast.patterns"),
        pytest.raises(TaskFailed, match="no disk"),
    ):
        await rpc.proxy.__getattr__(unique)(reason="no disk")
    assert any(record.exc_info for record in caplog.records)  # host_exceptions logs it

    def unpicklable() -> Any:
        return lambda: None

    await rpc.register(f"{unique}.bad", unpicklable, exclusive=True)
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        await rpc.call(f"{unique}.bad")
    await rpc.close()


async def test_call_timeout_leaves_nothing_behind(
    rpc: RPC, unique: str, caplog: pytest.LogCaptureFixture
):
    release = asyncio.Event()

    async def slow(*, value: int) -> int:
        await release.wait()
        return value

    await rpc.register(unique, slow, exclusive=True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rpc.call(unique, {"value": 1}), 0.2)
    assert rpc.futures == {}

    with caplog.at_level(logging.WARNING, logger="amqpfast.patterns"):
        release.set()  # the late reply finds no caller: logged, dropped
        await wait_until(lambda: any("Unknown message" in r.getMessage() for r in caplog.records))
    assert await rpc.call(unique, {"value": 2}) == 2


async def test_call_expires_when_nobody_takes_it(rpc: RPC, chan: Channel, unique: str):
    # a method queue nobody consumes, dead-lettering as RPC method queues do
    await chan.declare_queue(
        unique, exclusive=True, arguments={"x-dead-letter-exchange": RPC.DLX_NAME}
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await rpc.call(unique, expiration=0.3)
    assert 0.25 < loop.time() - started < 3
    assert rpc.futures == {}


async def test_call_queued_behind_a_busy_callee_expires(rpc: RPC, conn: Connection, unique: str):
    callee_channel = await conn.channel()
    await callee_channel.set_qos(prefetch_count=1)  # one call at a time
    callee = await RPC.create(callee_channel, auto_delete=True)
    release = asyncio.Event()

    async def slow(*, value: int) -> int:
        await release.wait()
        return value

    await callee.register(unique, slow, exclusive=True)
    first = asyncio.create_task(rpc.call(unique, {"value": 1}))
    await asyncio.sleep(0.1)
    with pytest.raises(TimeoutError):
        await rpc.call(unique, {"value": 2}, expiration=0.3)
    release.set()
    assert await first == 1
    await callee.close()


async def test_call_without_method_queue_fails(rpc: RPC, unique: str):
    with pytest.raises(MessageProcessError):
        await rpc.call(f"{unique}-nobody", {"x": 1})
    assert rpc.futures == {}


async def test_register_plain_function_is_deprecated(rpc: RPC, unique: str):
    def plain(**kwargs: Any) -> None:
        return None

    async def coroutine(**kwargs: Any) -> None:
        return None

    with pytest.deprecated_call():
        await rpc.register(f"{unique}.plain", plain, exclusive=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a coroutine function, also in partials: no warning
        await rpc.register(f"{unique}.coroutine", coroutine, exclusive=True)
        await rpc.register(f"{unique}.partial", partial(partial(coroutine)), exclusive=True)
    assert await rpc.call(f"{unique}.partial") is None


async def test_unknown_and_returned_messages_are_logged(
    rpc: RPC, chan: Channel, unique: str, caplog: pytest.LogCaptureFixture
):
    if rpc.direct_reply_to:
        pytest.skip("direct reply-to has no queue that strays could be published to")

    async def warned(text: str) -> logging.LogRecord:
        async with asyncio.timeout(5):
            while True:
                for record in caplog.records:
                    if record.levelno == logging.WARNING and text in record.getMessage():
                        return record
                await asyncio.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="amqpfast.patterns.rpc"):
        # on the result queue without a correlation id, then with an unknown one
        await chan.default_exchange.publish(Message(b"stray"), rpc.result_queue.name)
        record = await warned("Message without correlation_id was received:")
        assert isinstance(record.args, tuple)
        assert isinstance(record.args[0], IncomingMessage) and record.args[0].body == b"stray"
        await chan.default_exchange.publish(
            Message(b"late", correlation_id="nobody"), rpc.result_queue.name
        )
        assert (await warned("Unknown message:")).args[0].correlation_id == "nobody"  # type: ignore[index]
        # returned by the broker (mandatory, no queue): the RPC hears of it too
        await chan.default_exchange.publish(Message(b"lost"), f"{unique}-nobody")
        record = await warned("Message without correlation_id was returned:")
        assert isinstance(record.args, tuple) and record.args[0].body == b"lost"


async def test_direct_reply_to_calls_go_on_after_a_reconnect(amqp_url: str, unique: str):
    url = with_query(amqp_url, name=unique, reconnect_interval=0.2)
    connection = await amqpfast.connect_robust(url)
    try:
        channel = await connection.channel()
        rpc = await RPC.create(channel, direct_reply_to=True)
        await rpc.register(unique, multiply, auto_delete=True)
        assert await rpc.call(unique, {"x": 2, "y": 3}) == 6
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        await wait_for_connection_named(unique)
        await asyncio.to_thread(close_connections_named, unique)
        await asyncio.wait_for(reconnected.wait(), 15)
        # the reply consumer came back with the channel: replies find the caller again
        assert await asyncio.wait_for(rpc.call(unique, {"x": 4, "y": 5}), 10) == 20
        await rpc.close()
    finally:
        await connection.close()


async def test_register_twice_is_refused(rpc: RPC, unique: str):
    await rpc.register(unique, multiply, exclusive=True)
    with pytest.raises(RuntimeError):
        await rpc.register(f"{unique}.other", multiply, exclusive=True)
    with pytest.raises(RuntimeError):
        await rpc.register(unique, fail, exclusive=True)
    assert await rpc.proxy.__getattr__(unique)(x=3, y=3) == 9


async def test_close_cancels_pending_calls_and_cleans_up(
    chan: Channel, conn: Connection, unique: str, caplog: pytest.LogCaptureFixture
):
    rpc = await RPC.create(chan, auto_delete=True)
    never = asyncio.Event()

    async def sleeper() -> None:
        await never.wait()

    await rpc.register(unique, sleeper, exclusive=True)
    result_queue = rpc.result_queue.name
    calls = [asyncio.create_task(rpc.call(unique)) for _ in range(5)]
    await asyncio.sleep(0.1)
    await rpc.close()

    for call in calls:
        with pytest.raises(asyncio.CancelledError):
            await call
    assert rpc.routes == {} and rpc.futures == {}
    with caplog.at_level(logging.WARNING, logger="amqpfast.patterns"):
        await rpc.close()  # closing twice: a warning
    assert "RPC already closed" in caplog.text

    other = await conn.channel()
    with pytest.raises(ChannelNotFoundEntity):
        await other.declare_queue(result_queue, passive=True)
    never.set()  # the callee side finishes (its replies go nowhere)
    await asyncio.sleep(0.05)


async def test_channel_close_fails_pending_calls(conn: Connection, unique: str):
    callee_channel = await conn.channel()
    callee = await RPC.create(callee_channel, auto_delete=True)
    never = asyncio.Event()

    async def sleeper() -> None:
        await never.wait()

    await callee.register(unique, sleeper, exclusive=True)
    caller_channel = await conn.channel()
    caller = await RPC.create(caller_channel, auto_delete=True)
    call = asyncio.create_task(caller.call(unique))
    await asyncio.sleep(0.1)

    await caller_channel.close()
    with pytest.raises(ChannelClosed):
        await call
    await caller.close()  # its channel is gone: only the local state goes
    await callee.close()
    never.set()
    await asyncio.sleep(0.05)


async def test_call_and_reply_messages_on_the_wire(rpc: RPC, chan: Channel, unique: str):
    queue = await chan.declare_queue(
        unique, exclusive=True, arguments={"x-dead-letter-exchange": RPC.DLX_NAME}
    )
    call = asyncio.create_task(rpc.call(unique, {"x": 1}, expiration=30))
    message = await get_message(queue)

    assert message.type == RPCMessageType.CALL == "call"
    assert message.priority == 5
    assert message.delivery_mode == DeliveryMode.NOT_PERSISTENT
    assert message.content_type == "application/python-pickle"
    if rpc.direct_reply_to:  # the broker gives each call a reply address of its own
        assert message.reply_to is not None
        assert message.reply_to.startswith(f"{RPC.DIRECT_REPLY_TO}.")
    else:
        assert message.reply_to == rpc.result_queue.name
    assert message.headers == {"From": rpc.result_queue.name}
    assert message.expiration == 30
    assert message.correlation_id in rpc.futures
    assert pickle.loads(message.body) == {"x": 1}

    # an answer made by hand: a non-exception error payload is wrapped
    assert message.reply_to is not None
    await chan.default_exchange.publish(
        Message(
            pickle.dumps("not an exception"),
            correlation_id=message.correlation_id,
            type=RPCMessageType.ERROR.value,
        ),
        message.reply_to,
        mandatory=False,  # as the callee replies: RabbitMQ returns mandatory direct replies
    )
    await message.ack()
    with pytest.raises(RPCException):
        await call


async def test_json_rpc(chan: Channel, unique: str):
    rpc = await JsonRPC.create(chan, auto_delete=True)

    async def describe(*, name: str, tags: list[str]) -> dict[str, Any]:
        return {"name": name.upper(), "tags": sorted(tags), "count": len(tags)}

    async def odd() -> set[int]:
        return {1}  # JSON has no sets: sent as its repr

    async def broken(*, code: int) -> None:
        raise ValueError("bad code", code)

    await rpc.register(f"{unique}.describe", describe, exclusive=True)
    await rpc.register(f"{unique}.odd", odd, exclusive=True)
    await rpc.register(f"{unique}.broken", broken, exclusive=True)

    methods = getattr(rpc.proxy, unique)
    assert await methods.describe(name="straße", tags=["b", "a"]) == {
        "name": "STRASSE",
        "tags": ["a", "b"],
        "count": 2,
    }
    assert await methods.odd() == "{1}"
    with pytest.raises(JsonRPCError) as raised:
        await methods.broken(code=7)
    assert raised.value.args == (
        "RPC exception",
        {
            "error": {
                "type": "ValueError",
                "message": "ValueError('bad code', 7)",
                "args": ["bad code", 7],
            }
        },
    )

    # the reply on the wire, to a call made by hand
    replies = await chan.declare_queue(exclusive=True)
    await chan.default_exchange.publish(
        Message(
            json.dumps({"name": "x", "tags": []}).encode(),
            reply_to=replies.name,
            correlation_id="c-1",
            type="call",
        ),
        f"{unique}.describe",
    )
    reply = await get_message(replies)
    assert reply.content_type == "application/json"
    assert reply.type == "result"
    assert reply.correlation_id == "c-1"
    assert json.loads(reply.body) == {"name": "X", "tags": [], "count": 0}
    await rpc.close()


async def test_two_rpc_instances_on_different_connections(amqp_url: str, unique: str):
    async with (
        await amqpfast.connect(amqp_url) as callee_connection,
        await amqpfast.connect(amqp_url) as caller_connection,
    ):
        callee = await RPC.create(await callee_connection.channel(), auto_delete=True)
        caller = await RPC.create(await caller_connection.channel(), auto_delete=True)

        await callee.register(f"{unique}.multiply", multiply, auto_delete=True)

        async def echo(**kwargs: Any) -> dict[str, Any]:
            return kwargs

        await caller.register(f"{unique}.echo", echo, auto_delete=True)

        results = await asyncio.gather(
            *(getattr(caller.proxy, unique).multiply(x=n, y=2) for n in range(10))
        )
        assert results == [n * 2 for n in range(10)]
        # and the other way round
        assert await getattr(callee.proxy, unique).echo(a=1) == {"a": 1}
        await callee.register(f"{unique}.fail", fail, auto_delete=True)
        with pytest.raises(TaskFailed, match="remote"):
            await caller.call(f"{unique}.fail", {"reason": "remote"})

        await caller.close()
        await callee.close()


async def test_rpc_through_a_named_exchange(chan: Channel, unique: str):
    rpc = await RPC.create(chan, exchange=f"{unique}-rpc", auto_delete=True)
    assert rpc.rpc_exchange is not None
    await rpc.register("multiply", multiply, auto_delete=True)

    assert set(rpc.routes) == {f"{unique}-rpc::multiply"}
    assert await rpc.proxy.multiply(x=4, y=5) == 20
    await rpc.close()


# ---------------------------------------------------------------- the names


def parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [
        (parameter.name, parameter.kind, parameter.default)
        for parameter in inspect.signature(function).parameters.values()
    ]


@pytest.mark.parametrize("module", ["base", "master", "rpc"])
def test_same_names_and_signatures_as_aio_pika(module: str):
    pytest.importorskip("aio_pika")  # the reference, when it is installed
    theirs = importlib.import_module(f"aio_pika.patterns.{module}")
    ours = importlib.import_module(f"amqpfast.patterns.{module}")
    for name, their_object in vars(theirs).items():
        if name.startswith("_") or getattr(their_object, "__module__", None) != theirs.__name__:
            continue
        assert hasattr(ours, name), name
        if not inspect.isclass(their_object):
            continue
        our_class = getattr(ours, name)
        for member, value in vars(their_object).items():
            if member.startswith("_") and member not in ("__init__", "__call__", "__getattr__"):
                continue
            assert hasattr(our_class, member), f"{name}.{member}"
            if callable(value) or isinstance(value, (classmethod, staticmethod)):
                their_function = getattr(their_object, member)
                our_function = getattr(our_class, member)
                assert parameters(our_function) == parameters(their_function), f"{name}.{member}"
            elif isinstance(value, (str, int)) or inspect.ismodule(value):  # constants
                assert getattr(our_class, member) == value, f"{name}.{member}"
    assert set(importlib.import_module("aio_pika.patterns").__all__) <= set(patterns.__all__)


async def test_interoperates_with_aio_pika(amqp_url: str, conn: Connection, unique: str):
    aio_pika = pytest.importorskip("aio_pika")
    from aio_pika.patterns import RPC as TheirRPC
    from aio_pika.patterns import JsonMaster as TheirJsonMaster

    async with await aio_pika.connect(amqp_url) as their_connection:
        their_channel = await their_connection.channel()
        their_rpc = await TheirRPC.create(their_channel, auto_delete=True)
        our_rpc = await RPC.create(await conn.channel(), auto_delete=True)

        await their_rpc.register(f"{unique}.theirs", multiply, auto_delete=True)
        await our_rpc.register(f"{unique}.ours", fail, auto_delete=True)

        assert await our_rpc.call(f"{unique}.theirs", {"x": 3, "y": 4}) == 12
        with pytest.raises(TaskFailed, match="from amqpfast"):
            await their_rpc.call(f"{unique}.ours", {"reason": "from amqpfast"})
        await their_channel.declare_queue(
            f"{unique}.idle", exclusive=True, arguments={"x-dead-letter-exchange": RPC.DLX_NAME}
        )
        with pytest.raises(TimeoutError):  # dead-lettered back the same way
            await our_rpc.call(f"{unique}.idle", expiration=0.2)

        tasks: list[dict[str, Any]] = []

        async def handle(**kwargs: Any) -> None:
            tasks.append(kwargs)

        worker = await JsonMaster(await conn.channel()).create_worker(
            f"{unique}.tasks", handle, auto_delete=True
        )
        await TheirJsonMaster(their_channel).proxy.__getattr__(f"{unique}.tasks")(a=[1, "ü"])
        await wait_until(lambda: len(tasks) == 1)
        assert tasks == [{"a": [1, "ü"]}]

        await worker.close()
        await our_rpc.close()
        await their_rpc.close()
