"""Calling user callbacks without a Task per call.

A Task costs about ten times more CPU than driving a coroutine directly. A
consumer callback usually runs to its end without waiting (it acks, counts,
stores); then no Task is made at all. Only a coroutine that really waits is
handed, from where it stopped, to a Task that finishes it.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

log = logging.getLogger("amqpfast.core")

_CoroutineType = types.CoroutineType


@types.coroutine
def _continue(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    # Pass what the coroutine yields on to the Task and what the Task sends
    # (or throws: cancellation) back into the coroutine.
    while True:
        try:
            sent = yield yielded
        except BaseException as error:
            try:
                yielded = coro.throw(error)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _continue(coro, yielded)


class CallbackRunner:
    """Runs callbacks (plain or async) and keeps the Tasks of those that wait.

    :param what: how to name a failing callback in the log.
    """

    __slots__ = ("_loop", "_tasks", "_what")

    def __init__(self, loop: asyncio.AbstractEventLoop, what: str) -> None:
        self._loop = loop
        self._tasks: set[asyncio.Task[Any]] = set()
        self._what = what

    def call(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)``; if it returns a coroutine, drive it."""
        try:
            result = callback(*args)
            if result is None:
                return
            if type(result) is _CoroutineType:
                try:
                    yielded = result.send(None)
                except StopIteration:
                    return
                task = self._loop.create_task(_resume(result, yielded))
            elif asyncio.isfuture(result) or asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result, loop=self._loop)
            else:
                return
        except Exception:
            log.exception("%s %r failed", self._what, callback)
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", self._what, exc_info=task.exception())

    @property
    def pending(self) -> int:
        """How many callbacks are still waiting."""
        return len(self._tasks)

    def cancel(self) -> None:
        """Cancel the callbacks still waiting."""
        for task in list(self._tasks):
            task.cancel()
