"""Calling user callbacks: plain functions at once, coroutines in a Task each.

A coroutine callback gets a Task of its own, as in aio-pika: asyncio.timeout,
TaskGroup, wait_for (3.12+) and aiohttp need a current task, and context
variables must not leak from one message to the next. On Python 3.12+ the Task
starts eagerly, so a callback that never waits finishes inside the dispatch
without a trip through the event loop. (Driving the coroutine by hand until it
first waits is cheaper still, but breaks exactly those tools.)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

log = logging.getLogger("amqpfast.core")

_CoroutineType = types.CoroutineType
_EAGER = sys.version_info >= (3, 12)


class _Done:
    """An awaitable that is already finished (what basic_ack and friends return)."""

    __slots__ = ()

    def __await__(self) -> Iterator[Any]:
        return iter(())  # finishes at once; cheaper than a generator


DONE = cast(Awaitable[None], _Done())


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
        """Call ``callback(*args)``; if it returns a coroutine, run it in a Task."""
        try:
            result = callback(*args)
            if result is None:
                return
            if type(result) is _CoroutineType:
                if _EAGER:
                    task = asyncio.Task(result, loop=self._loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
                    if task.done():
                        self._done(task)
                        return
                else:
                    task = self._loop.create_task(result)
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
