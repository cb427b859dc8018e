"""How consumer callbacks run: in order, each inside a Task, none sharing one while alive.

No broker: the runner is handed callbacks directly, as a channel hands it
deliveries: from a plain loop callback, as during a socket read (with the
runner deferred to the end of the read, as the connection does, or not), and
from inside a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from amqpfast.core._drive import DEFERRED_BATCH, CallbackRunner

request_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("request_id", default=None)


class Deliver:
    """``await deliver(runner, handler, numbers)``: hand in one call per number.

    As a channel does: during a socket read (a plain loop callback, no task
    running), with the runner deferred to the end of the read as the
    connection defers it, or not; or from inside a task.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._reading = False
        self._deferred: list[CallbackRunner] = []

    def runner(self, what: str = "handler") -> CallbackRunner:
        loop = asyncio.get_running_loop()
        if self.mode == "deferred to the end of a read":
            return CallbackRunner(loop, what, self._defer)
        return CallbackRunner(loop, what)

    async def warm_up(self, runner: CallbackRunner) -> None:
        """A first read: its handlers go to a driver Task while a task parks for the next."""
        await self(runner, nothing, [0])
        await settle(runner)
        await asyncio.sleep(0)

    def _defer(self, runner: CallbackRunner) -> bool:
        if self._reading:
            self._deferred.append(runner)
        return self._reading

    async def __call__(self, runner: CallbackRunner, handler: Any, numbers: Iterable[int]) -> None:
        if self.mode == "deferred to the end of a read" and handler is not nothing:
            await self.warm_up(runner)  # so that these handlers step at the end of the read
        if self.mode == "from a task":
            for number in numbers:
                runner.call(handler, number)
            return
        done = asyncio.Event()

        def read() -> None:  # a plain callback of the loop: no task is running
            assert asyncio.current_task() is None
            self._reading = True
            try:
                for number in numbers:
                    runner.call(handler, number)
            finally:
                self._reading = False
            deferred, self._deferred = self._deferred, []
            for each in deferred:
                each.run_deferred()
            assert asyncio.current_task() is None
            done.set()

        asyncio.get_running_loop().call_soon(read)
        await done.wait()


async def nothing(number: int) -> None:
    pass


@pytest.fixture(params=["during a read", "deferred to the end of a read", "from a task"])
def deliver(request: pytest.FixtureRequest) -> Deliver:
    return Deliver(request.param)


async def settle(runner: CallbackRunner) -> None:
    """Wait until every callback handed to the runner has finished."""
    async with asyncio.timeout(5):
        while runner.pending:
            await asyncio.sleep(0.001)


async def test_handlers_that_do_not_wait_run_in_order_inside_a_task(deliver: Deliver) -> None:
    runner = deliver.runner()
    seen: list[tuple[int, bool]] = []

    async def handler(number: int) -> None:
        seen.append((number, asyncio.current_task() is not None))

    await deliver(runner, handler, range(100))
    await settle(runner)
    assert seen == [(number, True) for number in range(100)]


async def test_a_waiting_handler_does_not_hold_up_the_ones_after_it(deliver: Deliver) -> None:
    runner = deliver.runner()
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
    runner = deliver.runner()
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
    runner = deliver.runner()
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
    runner = deliver.runner()
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
    runner = deliver.runner("consumer callback")
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
    runner = deliver.runner()
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
    runner = deliver.runner()
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
    runner = deliver.runner("consumer callback")
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
    runner = deliver.runner("consumer callback")

    async def handler(number: int) -> None:
        raise Stop(number)

    with caplog.at_level(logging.ERROR, logger="amqpfast.core"):
        await deliver(runner, handler, [0])
        await settle(runner)
    assert [type(record.exc_info[1]) for record in caplog.records if record.exc_info] == [Stop]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks came with Python 3.12")
async def test_drivers_are_not_kept_under_an_eager_task_factory(deliver: Deliver) -> None:
    runner = deliver.runner("consumer callback")
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


def deferred_runner(what: str = "consumer callback") -> tuple[CallbackRunner, list[CallbackRunner]]:
    """A runner that a read always defers, and the list of the deferred ones."""
    deferred: list[CallbackRunner] = []

    def defer(runner: CallbackRunner) -> bool:
        deferred.append(runner)
        return True

    return CallbackRunner(asyncio.get_running_loop(), what, defer), deferred


async def warm_up(runner: CallbackRunner, deferred: list[CallbackRunner]) -> None:
    """A first read: a driver Task runs it, and a task parks for the next read."""
    await in_a_read(lambda: (runner.call(nothing, 0), runner.run_deferred()))
    await settle(runner)
    await asyncio.sleep(0)
    deferred.clear()


async def in_a_read(work: Callable[[], None]) -> None:
    """Run ``work`` as a plain loop callback, as a socket read runs."""
    done = asyncio.get_running_loop().create_future()

    def read() -> None:
        try:
            work()
        except BaseException as error:
            done.set_exception(error)
        else:
            done.set_result(None)

    asyncio.get_running_loop().call_soon(read)
    await done


async def test_deferred_handlers_run_before_the_read_ends_in_one_parked_task() -> None:
    runner, deferred = deferred_runner()
    tasks: list[asyncio.Task[Any] | None] = []

    async def handler(number: int) -> None:
        tasks.append(asyncio.current_task())

    await warm_up(runner, deferred)

    def read() -> None:
        for number in range(3):
            runner.call(handler, number)
        assert deferred == [runner] and tasks == []  # deferred once, nothing run yet
        runner.run_deferred()
        assert len(tasks) == 3 and tasks[0] is not None and set(tasks) == {tasks[0]}
        assert not tasks[0].done() and asyncio.current_task() is None
        assert runner.pending == 0  # the parked task is nobody's yet

    await in_a_read(read)
    # the next read's handlers step in the same parked task: no Task per read
    deferred.clear()
    before = tasks[0]
    await in_a_read(lambda: (runner.call(handler, 3), runner.run_deferred()))
    assert tasks[3] is before
    runner.cancel()  # the channel's close: the parked task ends
    await asyncio.sleep(0)
    assert before is not None and before.done()


async def test_a_big_read_steps_its_handlers_in_batches_and_the_rest_at_its_end() -> None:
    # Thousands of handlers queued by one read (and their messages) would be
    # alive at once until its end: every DEFERRED_BATCH of them step at once.
    runner, deferred = deferred_runner()
    done: list[int] = []
    tasks: set[asyncio.Task[Any] | None] = set()

    async def handler(number: int) -> None:
        tasks.add(asyncio.current_task())
        done.append(number)

    await warm_up(runner, deferred)
    total = 2 * DEFERRED_BATCH + 5

    def read() -> None:
        for number in range(total):
            runner.call(handler, number)
            stepped = (number + 1) // DEFERRED_BATCH * DEFERRED_BATCH
            assert done == list(range(stepped))  # in order, a batch as soon as it is full
        assert deferred == [runner]  # deferred once for the whole read
        runner.run_deferred()  # the read's end: the last 5
        assert done == list(range(total))
        assert len(tasks) == 1 and None not in tasks  # all in the one parked task
        assert runner.pending == 0

    await in_a_read(read)
    runner.cancel()


async def test_a_waiting_handler_keeps_the_parked_task_and_the_rest_go_on() -> None:
    runner, deferred = deferred_runner()
    gate = asyncio.Event()
    tasks: dict[int, asyncio.Task[Any] | None] = {}
    finished: list[int] = []

    async def handler(number: int) -> None:
        tasks[number] = asyncio.current_task()
        if number == 0:
            await gate.wait()
            assert asyncio.current_task() is tasks[0]
        finished.append(number)

    await warm_up(runner, deferred)

    def read() -> None:
        for number in range(3):
            runner.call(handler, number)
        runner.run_deferred()

    await in_a_read(read)
    assert finished == [1, 2]  # the rest of the read went on without waiting for 0
    assert tasks[1] is tasks[2] and tasks[1] is not tasks[0]
    gate.set()
    await settle(runner)
    assert finished == [1, 2, 0]
    runner.cancel()


async def test_a_cancel_before_the_parked_task_resumes_its_handler_reaches_the_handler() -> None:
    runner, deferred = deferred_runner()
    seen: list[str] = []

    async def handler(number: int) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # never set
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    tasks: list[asyncio.Task[Any]] = []

    await warm_up(runner, deferred)

    def read() -> None:
        runner.call(handler, 0)
        runner.run_deferred()
        (task,) = runner._drivers  # the parked task, now the handler's
        tasks.append(task)
        task.cancel()  # before it ever ran: e.g. the close of the channel

    await in_a_read(read)
    await settle(runner)
    assert seen == ["cancelled"] and tasks[0].done()


async def test_a_handler_cancelling_the_parked_task_does_not_cancel_the_next() -> None:
    runner, deferred = deferred_runner()
    tasks: list[asyncio.Task[Any] | None] = []
    finished: list[int] = []

    async def handler(number: int) -> None:
        task = asyncio.current_task()
        tasks.append(task)
        if number == 0:
            assert task is not None
            task.cancel()
        else:
            await asyncio.sleep(0.001)
        finished.append(number)

    await warm_up(runner, deferred)

    def read() -> None:
        runner.call(handler, 0)
        runner.call(handler, 1)
        runner.run_deferred()

    await in_a_read(read)
    await settle(runner)
    assert finished == [0, 1] and tasks[0] is not tasks[1]
    runner.cancel()


async def test_deferred_from_inside_a_task_falls_back_to_a_driver() -> None:
    runner, _ = deferred_runner()
    tasks: list[asyncio.Task[Any] | None] = []

    async def handler(number: int) -> None:
        tasks.append(asyncio.current_task())

    runner.call(handler, 0)
    runner.run_deferred()  # a task is current: the handler waits for a driver
    assert tasks == []
    await settle(runner)
    assert tasks[0] is not None and tasks[0] is not asyncio.current_task()


async def test_a_waiting_handlers_task_sleeps_on_and_a_later_read_uses_it() -> None:
    runner, deferred = deferred_runner()
    gates = [asyncio.Event(), asyncio.Event()]
    tasks: list[asyncio.Task[Any] | None] = []
    timed_out: list[bool] = []

    async def handler(number: int) -> None:
        tasks.append(asyncio.current_task())
        if number < 2:
            await gates[number].wait()
        else:
            # a timeout in a task that ran an earlier handler still works
            try:
                async with asyncio.timeout(0.001):
                    await asyncio.sleep(1)
            except TimeoutError:
                timed_out.append(True)

    await warm_up(runner, deferred)
    await in_a_read(lambda: (runner.call(handler, 0), runner.run_deferred()))
    gates[0].set()
    await settle(runner)  # handler 0 is done: its task sleeps on as the spare
    first = tasks[0]
    assert first is not None and not first.done() and runner.pending == 0
    await in_a_read(lambda: (runner.call(handler, 1), runner.run_deferred()))
    assert tasks[1] is not first  # the task parked meanwhile; handler 1 keeps it
    await in_a_read(lambda: (runner.call(handler, 2), runner.run_deferred()))
    assert tasks[2] is first  # the spare parked in its place: no new Task
    gates[1].set()
    await settle(runner)
    assert timed_out == [True]
    runner.cancel()  # the parked and the spare task end with the channel
    await asyncio.sleep(0)
    assert all(task is not None and task.done() for task in tasks)


async def test_handlers_of_one_read_that_all_wait_go_on_at_once_in_spare_tasks() -> None:
    runner, deferred = deferred_runner()
    gate = asyncio.Event()
    started: list[tuple[int, asyncio.Task[Any] | None]] = []
    timed_out: list[int] = []

    async def handler(number: int) -> None:
        started.append((number, asyncio.current_task()))
        await gate.wait()
        try:  # each one's timeout is its own task's
            async with asyncio.timeout(0.001):
                await asyncio.sleep(1)
        except TimeoutError:
            timed_out.append(number)

    await warm_up(runner, deferred)

    def read(numbers: range) -> None:
        for number in numbers:
            runner.call(handler, number)
        runner.run_deferred()

    # a first read: the first handler keeps the parked task, drivers take the rest
    await in_a_read(lambda: read(range(3)))
    await asyncio.sleep(0.01)
    gate.set()
    await settle(runner)
    first_tasks = {task for _, task in started}
    assert len(first_tasks) == 3 and all(task is not None for task in first_tasks)
    assert all(task is not None and not task.done() for task in first_tasks)  # asleep, spare
    gate.clear()
    started.clear()
    # the next read: every handler steps within the read, the first in the
    # parked task, the others each in a spare: no new Task, no later loop turn
    parked = runner._parked
    await in_a_read(lambda: read(range(3, 6)))
    assert [number for number, _ in started] == [3, 4, 5]
    tasks = [task for _, task in started]
    assert tasks[0] is parked and len(set(tasks)) == 3 and set(tasks[1:]) <= first_tasks
    gate.set()
    await settle(runner)
    assert sorted(timed_out) == [0, 1, 2, 3, 4, 5]
    runner.cancel()  # the spares end with the channel
    await asyncio.sleep(0)
    assert all(task is not None and task.done() for task in first_tasks)


async def test_a_task_someone_cancelled_is_not_used_again() -> None:
    runner, deferred = deferred_runner()
    tasks: list[asyncio.Task[Any] | None] = []

    async def handler(number: int) -> None:
        tasks.append(asyncio.current_task())
        if number == 0:
            with contextlib.suppress(asyncio.CancelledError):  # taken back by the handler
                await asyncio.sleep(1)

    await warm_up(runner, deferred)
    await in_a_read(lambda: (runner.call(handler, 0), runner.run_deferred()))
    cancelled = tasks[0]
    assert cancelled is not None
    cancelled.cancel()
    await settle(runner)
    await asyncio.sleep(0)
    assert cancelled.done()  # ended with its handler: its cancel count stays its own
    await in_a_read(lambda: (runner.call(handler, 1), runner.run_deferred()))
    assert tasks[1] is not cancelled
    runner.cancel()
