"""How consumer callbacks run: in order, each inside a Task, none sharing one while alive.

No broker: the runner is handed callbacks directly, as a channel hands it
deliveries: from a plain loop callback, as during a socket read, and from
inside a task.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

from amqpfast.core._drive import CallbackRunner

Deliver = Callable[..., Awaitable[None]]
request_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("request_id", default=None)


@pytest.fixture(params=["during a read", "from a task"])
def deliver(request: pytest.FixtureRequest) -> Deliver:
    """``await deliver(runner, handler, numbers)``: hand in one call per number."""

    async def from_a_read(runner: CallbackRunner, handler: Any, numbers: Iterable[int]) -> None:
        done = asyncio.Event()

        def read() -> None:  # a plain callback of the loop: no task is running
            assert asyncio.current_task() is None
            for number in numbers:
                runner.call(handler, number)
            done.set()

        asyncio.get_running_loop().call_soon(read)
        await done.wait()

    async def from_a_task(runner: CallbackRunner, handler: Any, numbers: Iterable[int]) -> None:
        for number in numbers:
            runner.call(handler, number)

    return from_a_read if request.param == "during a read" else from_a_task


async def settle(runner: CallbackRunner) -> None:
    """Wait until every callback handed to the runner has finished."""
    async with asyncio.timeout(5):
        while runner.pending:
            await asyncio.sleep(0.001)


async def test_handlers_that_do_not_wait_run_in_order_inside_a_task(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "handler")
    seen: list[tuple[int, bool]] = []

    async def handler(number: int) -> None:
        seen.append((number, asyncio.current_task() is not None))

    await deliver(runner, handler, range(100))
    await settle(runner)
    assert seen == [(number, True) for number in range(100)]


async def test_a_waiting_handler_does_not_hold_up_the_ones_after_it(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "handler")
    released = asyncio.Event()
    finished: list[int] = []

    async def handler(number: int) -> None:
        if number == 0:
            await released.wait()  # only handler 2 sets it
        elif number == 2:
            released.set()
        finished.append(number)

    await deliver(runner, handler, range(4))
    await settle(runner)
    assert finished == [1, 2, 3, 0]


async def test_handlers_alive_at_the_same_time_never_share_a_task(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "handler")
    gate = asyncio.Event()
    tasks: dict[int, asyncio.Task[object] | None] = {}

    async def handler(number: int) -> None:
        tasks[number] = asyncio.current_task()
        if number % 2:
            await gate.wait()
        assert asyncio.current_task() is tasks[number]

    await deliver(runner, handler, range(20))
    while len(tasks) < 20:
        await asyncio.sleep(0)
    waiting = [tasks[number] for number in range(1, 20, 2)]
    assert len(set(map(id, waiting))) == 10
    gate.set()
    await settle(runner)


async def test_context_variables_stay_with_their_message(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "handler")
    seen: dict[int, tuple[int | None, int | None]] = {}

    async def handler(number: int) -> None:
        before = request_id.get()
        request_id.set(number)
        if number % 3 == 0:
            await asyncio.sleep(0.001)
        seen[number] = (before, request_id.get())

    await deliver(runner, handler, range(30))
    await settle(runner)
    assert seen == {number: (None, number) for number in range(30)}
    assert request_id.get() is None


async def test_timeout_and_task_group_work_in_a_handler(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "handler")
    outcomes: list[str] = []

    async def handler(number: int) -> None:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10 if number == 0 else 0)
            outcomes.append("in time")
        except TimeoutError:
            outcomes.append("timed out")
        async with asyncio.TaskGroup() as group:
            group.create_task(asyncio.sleep(0))
        outcomes.append("group done")

    await deliver(runner, handler, [0, 1])
    await settle(runner)
    assert sorted(outcomes) == ["group done", "group done", "in time", "timed out"]


async def test_a_failing_handler_is_logged_and_the_next_ones_run(
    caplog: pytest.LogCaptureFixture, deliver: Deliver
) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "consumer callback")
    finished: list[int] = []

    async def handler(number: int) -> None:
        if number == 1:
            raise ValueError("handler one broke")
        if number == 3:
            await asyncio.sleep(0)
            raise KeyError("handler three broke after waiting")
        finished.append(number)

    with caplog.at_level(logging.ERROR, logger="amqpfast.core"):
        await deliver(runner, handler, range(5))
        await settle(runner)
    assert finished == [0, 2, 4]
    errors = [record.exc_info[1] for record in caplog.records if record.exc_info]
    assert [type(error) for error in errors] == [ValueError, KeyError]
    assert all(record.getMessage() == "consumer callback failed" for record in caplog.records)


@pytest.mark.parametrize("taken_back", [False, True], ids=["cancelled", "cancel taken back"])
async def test_a_handler_cancelling_its_own_task_does_not_cancel_the_next(
    deliver: Deliver, taken_back: bool
) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "handler")
    finished: list[int] = []

    async def handler(number: int) -> None:
        if number == 0:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # and returns without waiting
            if taken_back:
                task.uncancel()  # on 3.11 and 3.12 the cancel stays armed all the same
        else:
            await asyncio.sleep(0.001)
        finished.append(number)

    await deliver(runner, handler, [0, 1])
    await settle(runner)
    assert finished == [0, 1]


async def test_cancel_stops_waiting_handlers_and_drops_the_rest(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "handler")
    cancelled: list[int] = []
    started: list[int] = []

    async def handler(number: int) -> None:
        started.append(number)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(number)
            raise

    await deliver(runner, handler, [0, 1])
    while len(started) < 2:
        await asyncio.sleep(0)
    runner.call(handler, 2)  # from this task: queued, not started yet
    runner.cancel()
    await asyncio.sleep(0.01)
    assert sorted(cancelled) == [0, 1]
    assert started == [0, 1]
    assert runner.pending == 0
    runner.call(handler, 3)  # still usable afterwards
    while len(started) < 3:
        await asyncio.sleep(0)
    assert started == [0, 1, 3]
    runner.cancel()


async def test_a_driver_cancelled_before_it_starts_does_not_stall_the_queue() -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "consumer callback")
    ran: list[int] = []

    async def handler(number: int) -> None:
        ran.append(number)

    runner.call(handler, 0)
    for task in asyncio.all_tasks():  # e.g. a shutdown helper cancelling "every other task"
        if task is not asyncio.current_task():
            task.cancel()
    runner.call(handler, 1)
    runner.call(handler, 2)
    await settle(runner)
    assert ran == [0, 1, 2]  # the cancelled driver took nothing: a new one ran them all


async def test_pending_counts_cancelled_handlers_until_they_finish(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "consumer callback")
    steps: list[str] = []

    async def handler(number: int) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # cleaning up
            steps.append("cleaned up")
            raise

    await deliver(runner, handler, [0])
    while not runner.pending:
        await asyncio.sleep(0)
    await asyncio.sleep(0.001)
    runner.cancel()
    assert runner.pending == 1
    await settle(runner)
    assert steps == ["cleaned up"]


class Stop(BaseException):
    """Not an Exception: what a handler might raise to bail out hard."""


async def test_a_base_exception_from_a_handler_is_logged_and_released(
    caplog: pytest.LogCaptureFixture, deliver: Deliver
) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "consumer callback")

    async def handler(number: int) -> None:
        raise Stop(number)

    with caplog.at_level(logging.ERROR, logger="amqpfast.core"):
        await deliver(runner, handler, [0])
        await settle(runner)
    assert [type(record.exc_info[1]) for record in caplog.records if record.exc_info] == [Stop]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came with Python 3.12")
async def test_drivers_are_not_kept_under_an_eager_task_factory(deliver: Deliver) -> None:
    runner = CallbackRunner(asyncio.get_running_loop(), "consumer callback")
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    try:
        done: list[int] = []

        async def handler(number: int) -> None:
            done.append(number)

        await deliver(runner, handler, range(50))
        await settle(runner)
        assert done == list(range(50)) and runner.pending == 0
    finally:
        loop.set_task_factory(None)
