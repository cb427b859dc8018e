"""run_coroutines: the driver's loop over waiting handlers, compiled and twin.

Each handler is stepped once in a fresh copy of the current context, in order;
the first that waits is handed back; errors go where the driver wants them.
No event loop is needed: the handlers here wait on plain objects.
"""

from __future__ import annotations

import contextvars
import types
from collections import deque
from collections.abc import Generator
from typing import Any

import pytest

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="unset")


class Cancelled(BaseException):
    """Stands for asyncio.CancelledError (a BaseException, not an Exception)."""


@types.coroutine
def _wait_on(thing: Any) -> Generator[Any, Any, Any]:
    return (yield thing)


def _never(task: Any) -> bool:
    return False


def test_handlers_run_in_order_each_in_its_own_context(codec):
    log: list[str] = []

    async def handler(name: str) -> None:
        log.append(f"{name} saw {seen.get()}")
        seen.set(name)  # must not reach the next handler, nor the caller

    queue = deque([handler("a"), handler("b"), handler("c")])

    assert codec.run_coroutines(queue, _never, None, log.append, Cancelled) is None

    assert log == ["a saw unset", "b saw unset", "c saw unset"]
    assert not queue
    assert seen.get() == "unset"


def test_the_first_handler_that_waits_is_handed_back_with_its_context(codec):
    marker = object()
    finished: list[str] = []

    async def quick() -> None:
        finished.append("quick")

    async def slow() -> str:
        seen.set("slow")
        await _wait_on(marker)
        return "done"

    later = quick()
    queue = deque([quick(), slow(), later])

    waiting = codec.run_coroutines(queue, _never, None, finished.append, Cancelled)

    assert waiting is not None
    coro, context, waiting_on = waiting
    assert waiting_on is marker
    assert context[seen] == "slow" and seen.get() == "unset"
    assert finished == ["quick"] and list(queue) == [later]
    with pytest.raises(StopIteration) as stopped:  # it carries on where it waited
        context.run(coro.send, None)
    assert stopped.value.value == "done"
    later.close()


def test_a_failing_handler_goes_to_failed_and_the_rest_run(codec):
    failures: list[BaseException] = []
    ran: list[str] = []

    async def bad() -> None:
        raise ValueError("boom")

    async def cancelled() -> None:
        raise Cancelled

    async def good() -> None:
        ran.append("good")

    queue = deque([bad(), cancelled(), good()])

    assert codec.run_coroutines(queue, _never, None, failures.append, Cancelled) is None

    assert [type(error) for error in failures] == [ValueError]  # Cancelled ends quietly
    assert ran == ["good"]
    assert seen.get() == "unset"


def test_other_base_exceptions_propagate_and_leave_the_context(codec):
    async def interrupted() -> None:
        seen.set("inside")
        raise KeyboardInterrupt

    async def after() -> None:
        raise AssertionError("not reached")

    pending = after()
    queue = deque([interrupted(), pending])

    with pytest.raises(KeyboardInterrupt):
        codec.run_coroutines(queue, _never, None, print, Cancelled)

    assert seen.get() == "unset"  # the handler's context was left
    assert list(queue) == [pending]
    pending.close()


def test_a_cancelled_driver_takes_no_more_handlers(codec):
    ran: list[int] = []
    asked: list[Any] = []

    async def handler(number: int) -> None:
        ran.append(number)

    def cancel_after_first(task: Any) -> bool:
        asked.append(task)
        return bool(ran)

    queue = deque([handler(1), handler(2)])
    task = object()

    assert codec.run_coroutines(queue, cancel_after_first, task, print, Cancelled) is None

    assert ran == [1] and len(queue) == 1 and asked == [task, task]
    queue.popleft().close()
