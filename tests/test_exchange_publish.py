"""Exchange.publish: the call queues the message, the awaitable it returns answers.

aio-pika's ``publish`` is a coroutine; here it is a plain method that returns
a Future on a confirm channel (so ``gather`` makes no Task per message) and a
coroutine otherwise. Whatever code does with aio-pika's coroutine must work
with it: await, ``gather`` (with ``return_exceptions``), ``create_task``,
``wait_for``, errors raised by the await, not by the call.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections.abc import Callable
from typing import Any

import pytest
from pamqp import commands as spec

import amqpfast
from amqpfast import Connection, Exchange, Message
from amqpfast.exceptions import ChannelInvalidStateError, ChannelNotFoundEntity


async def _bodies(queue: amqpfast.Queue, count: int) -> list[bytes]:
    bodies = []
    for _ in range(count):
        message = await queue.get(timeout=5, no_ack=True)
        bodies.append(message.body)
    return bodies


async def test_publish_says_it_is_a_coroutine_function(conn: Connection):
    channel = await conn.channel()
    robust = await amqpfast.connect_robust(conn.url)
    try:
        for exchange in (channel.default_exchange, (await robust.channel()).default_exchange):
            assert asyncio.iscoroutinefunction(exchange.publish)
            if sys.version_info >= (3, 12):
                assert inspect.iscoroutinefunction(exchange.publish)
    finally:
        await robust.close()


async def test_gather_over_publishes_takes_futures_and_keeps_the_order(conn: Connection):
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)
    exchange = channel.default_exchange

    publishes = [exchange.publish(Message(b"%d" % n), queue.name) for n in range(100)]

    assert all(asyncio.isfuture(publish) for publish in publishes)  # no Task needed
    results = await asyncio.gather(*publishes)
    assert all(isinstance(result, spec.Basic.Ack) for result in results)
    assert await _bodies(queue, 100) == [b"%d" % n for n in range(100)]


@pytest.mark.parametrize("confirms", [True, False], ids=["confirms", "no confirms"])
async def test_create_task_wait_for_and_wait_take_a_publish(conn: Connection, confirms: bool):
    channel = await conn.channel(publisher_confirms=confirms)
    queue = await channel.declare_queue(exclusive=True)
    exchange = channel.default_exchange

    task = asyncio.create_task(exchange.publish(Message(b"task"), queue.name))
    waited = await asyncio.wait_for(exchange.publish(Message(b"wait_for"), queue.name), 5)

    done, _ = await asyncio.wait({asyncio.create_task(exchange.publish(Message(b"w"), queue.name))})

    answer = await task
    expected = spec.Basic.Ack if confirms else type(None)
    assert isinstance(answer, expected) and isinstance(waited, expected)
    assert isinstance(done.pop().result(), expected)
    assert await _bodies(queue, 3) == [b"task", b"wait_for", b"w"]


async def test_errors_are_raised_by_the_await_not_by_the_call(conn: Connection, unique: str):
    channel = await conn.channel()
    internal = await channel.declare_exchange(unique, internal=True, auto_delete=True)
    queue = await channel.declare_queue(exclusive=True)

    to_internal = internal.publish(Message(b"x"), "")  # no error yet
    with pytest.raises(ValueError, match="internal exchange"):
        await to_internal

    results = await asyncio.gather(
        channel.default_exchange.publish(Message(b"ok"), queue.name),
        internal.publish(Message(b"x"), ""),
        return_exceptions=True,
    )
    assert isinstance(results[0], spec.Basic.Ack) and isinstance(results[1], ValueError)

    await channel.close()
    after_close = channel.default_exchange.publish(Message(b"late"), queue.name)
    with pytest.raises(ChannelInvalidStateError):
        await after_close


async def test_a_handler_whose_channel_closes_under_its_publish_gets_the_close_error(
    conn: Connection, unique: str
):
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)
    missing = Exchange(channel, f"{unique}.missing")  # never declared: the broker closes
    seen: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def handler(message: amqpfast.abc.AbstractIncomingMessage) -> None:
        try:
            await missing.publish(Message(b"nowhere"), "")
        except BaseException as error:
            seen.set_result(error)
            raise

    await queue.consume(handler, no_ack=True)
    await channel.default_exchange.publish(Message(b"go"), queue.name)

    error = await asyncio.wait_for(seen, 5)
    assert isinstance(error, ChannelNotFoundEntity), repr(error)  # not a bare CancelledError


async def test_done_callbacks_of_confirms_run_in_order_in_their_context(conn: Connection):
    # The confirms a Basic.Ack settles run their done callbacks together:
    # in the order a loop callback each would, each in its own context; one
    # that raises goes to the loop's exception handler, one removed is not run.
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)
    loop = asyncio.get_running_loop()
    reported: list[BaseException] = []
    loop.set_exception_handler(lambda _, context: reported.append(context["exception"]))
    label: contextvars.ContextVar[int] = contextvars.ContextVar("label")
    ran: list[tuple[int, int]] = []

    def record(number: int) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            assert future.done() and isinstance(future.result(), spec.Basic.Ack)
            ran.append((number, label.get()))
            if number == 3:
                raise RuntimeError("a failing callback")

        return done

    try:
        publishes = [channel.default_exchange.publish(Message(b"x"), queue.name) for _ in range(8)]
        removed = record(99)
        for number, publish in enumerate(publishes):
            label.set(number * 10)  # the context each callback is added in
            publish.add_done_callback(record(number))  # type: ignore[attr-defined]
            if number == 5:
                publish.add_done_callback(removed)  # type: ignore[attr-defined]
                assert publish.remove_done_callback(removed) == 1  # type: ignore[attr-defined]
        await asyncio.gather(*publishes)
        await asyncio.sleep(0)  # the callbacks of the last ones may be a turn behind
        assert ran == [(number, number * 10) for number in range(8)]
        assert [str(error) for error in reported] == ["a failing callback"]
        # added once it is done: scheduled at once, as by any Future
        late: list[int] = []
        publishes[0].add_done_callback(lambda _: late.append(1))  # type: ignore[attr-defined]
        await asyncio.sleep(0)
        assert late == [1]
    finally:
        loop.set_exception_handler(None)


async def test_a_cancelled_confirm_wakes_whoever_waits_for_it(conn: Connection):
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)
    publish = channel.default_exchange.publish(Message(b"x"), queue.name)
    waiter = asyncio.ensure_future(asyncio.shield(publish))  # a done callback of the confirm
    called: list[bool] = []
    publish.add_done_callback(lambda future: called.append(future.cancelled()))  # type: ignore[attr-defined]

    assert publish.cancel()  # type: ignore[attr-defined]

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
    assert called == [True]
    assert await _bodies(queue, 1) == [b"x"]  # sent all the same; the channel goes on
    assert isinstance(
        await channel.default_exchange.publish(Message(b"y"), queue.name), spec.Basic.Ack
    )
