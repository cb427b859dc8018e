"""Calling user callbacks: plain functions at once, coroutines in driver Tasks.

A coroutine callback must run inside a Task, as in aio-pika: asyncio.timeout,
TaskGroup, wait_for and aiohttp need a current task, and context variables
must not leak from one message to the next. A Task per message costs more than
the rest of a delivery together, so coroutines wait in a queue and a *driver*
Task runs them one after another, each in a fresh copy of the context. Most
handlers finish without waiting; they cost a ``send`` each. A handler that
does wait keeps its driver for the rest of its life (so the task it saw as
current stays its own), and a new driver takes over the queue: at any moment
every unfinished handler has a Task of its own, never shared.

During the read of a socket the connection defers the runner instead: the
handlers queued by that read are stepped at its end, in place, with a
*parked* Task as the current task (one that sleeps until a handler needs it);
a big read's, every ``DEFERRED_BATCH`` of them as soon as they are queued.
That saves the driver Task and its loop turn per read, and what the handlers
wrote (their acks) leaves with the read's own write. A handler that waits
takes the parked Task as its own, and the next one parks. When that handler
is done, its Task (unless someone ever cancelled it) sleeps on as the *spare*,
the next one to park: a handler that waits for its reply's confirm, as an
RPC callee's does, then costs no new Task per message.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import operator
import types

# what a Task's step does around it: make the task the loop's current one
from asyncio.tasks import _enter_task, _leave_task
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, cast

from ..codec import Finished, run_coroutines

log = logging.getLogger("amqpfast.core")

# Tasks of handlers that waited kept asleep, at most, for the next handlers
# that wait (a Task each): about the calls a consumer has in flight at once
SPARE_TASKS = 32
# Handlers a read may queue before they step (in the read, at once)
DEFERRED_BATCH = 128

_CoroutineType = types.CoroutineType
_current_task = asyncio.current_task
# Whether someone asked a running Task to cancel: its armed flag, which also
# covers a cancel taken back by uncancel() (still armed on 3.11 and 3.12);
# where Task lacks the flag, the count of cancel requests.
_cancel_asked: Callable[[asyncio.Task[Any]], Any] = (
    operator.attrgetter("_must_cancel")
    if hasattr(asyncio.Task, "_must_cancel")
    else asyncio.Task.cancelling
)


# What basic_ack and friends return: awaiting it is done at once, in C
DONE = cast(Awaitable[None], Finished())


@types.coroutine
def _resume(
    coro: Coroutine[Any, Any, Any],
    context: contextvars.Context,
    waiting_on: Any,
    thrown: BaseException | None = None,
) -> Generator[Any, Any, None]:
    """Carry on a coroutine that was stepped by hand until it first waited.

    What the coroutine yields goes to the running Task, and what the Task sends
    or throws back goes to the coroutine, as ``await`` would do, each step in
    the coroutine's own context. ``thrown``: an error to throw in first (a
    cancel that came before the Task took the coroutine on).
    """
    step: Callable[[Any], Any]
    while True:
        if thrown is not None:
            step, value, thrown = coro.throw, thrown, None
        else:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation included: it is the coroutine's
                step, value = coro.throw, exc
            else:
                step, value = coro.send, sent
        try:
            waiting_on = context.run(step, value)
        except StopIteration:
            return


class CallbackRunner:
    """Runs callbacks (plain or async) in the order they are handed in.

    :param what: how to name a failing callback in the log.
    :param defer: ``defer(runner)`` is true when the caller (the connection,
        during a read) takes the runner and calls :meth:`run_deferred` at the
        end of what it is doing; otherwise a driver Task runs the handlers.
    """

    __slots__ = (
        "_defer",
        "_deferred",
        "_drivers",
        "_loop",
        "_parked",
        "_parked_ready",
        "_queue",
        "_spares",
        "_stopped",
        "_taker",
        "_wake",
        "_what",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        what: str,
        defer: Callable[[CallbackRunner], bool] | None = None,
    ) -> None:
        self._loop = loop
        self._queue: deque[Coroutine[Any, Any, Any]] = deque()
        self._taker: asyncio.Task[None] | None = None  # the driver due to work the queue
        self._drivers: set[asyncio.Future[Any]] = set()  # drivers, and awaitables callbacks gave
        self._what = what
        self._defer = defer
        self._deferred = False  # run_deferred() is due
        # the current task of deferred steps, and what hands it a handler that waits
        self._parked: asyncio.Task[None] | None = None
        self._parked_ready = False  # it has started: it is waiting on _wake
        self._wake: asyncio.Future[Any] | None = None
        # Tasks whose handler is done, asleep on their own wake: the next to
        # park, or to take the next handler of a read at once when one waits
        self._spares: list[tuple[asyncio.Task[None], asyncio.Future[Any]]] = []
        self._stopped = False  # cancel() was called: no Task stays asleep

    def call(self, callback: Callable[[Any], Any], argument: Any) -> None:
        """Call ``callback(argument)``; a coroutine it returns runs in a driver Task."""
        try:
            result = callback(argument)  # one argument: no tuple per call
        except Exception:
            log.exception("%s %r failed", self._what, callback)
            return
        if result is None:
            return
        if type(result) is _CoroutineType:
            queue = self._queue
            queue.append(result)
            if self._taker is not None:
                return
            if self._deferred:
                if len(queue) >= DEFERRED_BATCH:
                    # A big read: what it brought so far steps now, and the
                    # rest at its end (still deferred). Thousands of handlers
                    # and their messages alive at once would make the cyclic
                    # GC walk them again and again.
                    self.run_deferred()
                    self._deferred = True
                return
            defer = self._defer
            if defer is not None and defer(self):
                self._deferred = True
            else:
                self._start_driver()
        elif asyncio.isfuture(result) or asyncio.iscoroutine(result):
            self._track(asyncio.ensure_future(result, loop=self._loop))

    def _start_driver(self) -> None:
        # The Task class itself, not loop.create_task(): a task factory making
        # eager tasks would run the driver inside this call, one in another.
        task = self._taker = asyncio.Task(self._drive(), loop=self._loop)
        self._track(task)

    def _track(self, future: asyncio.Future[Any]) -> None:
        self._drivers.add(future)
        future.add_done_callback(self._finished)

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self._drivers.discard(future)
        if future is self._taker:  # it ended before it could pass the queue on
            self._taker = None
            if self._queue:
                self._start_driver()
        if not future.cancelled() and future.exception() is not None:
            self._failed(future.exception())  # type: ignore[arg-type]

    async def _drive(self) -> None:
        task = _current_task()
        assert task is not None
        queue = self._queue
        try:
            # Each handler stepped once, in a copy of the context, until one
            # waits (the codec's loop: in C when compiled). A driver someone
            # cancelled takes nothing more (a handler kept it as its current
            # task): no later handler may inherit the cancel. A handler that
            # cancelled itself ends, as a Task would ignore it.
            waiting = run_coroutines(
                queue, _cancel_asked, task, self._failed, asyncio.CancelledError
            )
        finally:
            if self._taker is task:
                self._taker = None
                if queue:
                    self._start_driver()
        if waiting is None:
            return
        try:
            # This Task belongs to the waiting handler from now on.
            await _resume(*waiting)
        except Exception as exc:
            self._failed(exc)
        except asyncio.CancelledError:
            return
        wake = self._sleep_as_spare(task, None)
        if wake is not None:
            await self._park(wake)

    def run_deferred(self) -> None:
        """Step the handlers queued since :meth:`call` was deferred, here and now.

        Each runs in a copy of the context with the parked Task as the
        current task, until it finishes or waits; one that waits keeps that
        Task (it goes on there), and the next handlers go on at once in a
        spare Task (one whose handler is done) while one sleeps, else in a
        driver Task from the next loop turn. The parked Task must have
        started (so that a cancel reaches the handler that takes it): until a
        new one has, and inside a task, a driver Task runs the handlers as
        :meth:`call` would.
        """
        self._deferred = False
        queue = self._queue
        if not queue or self._taker is not None:
            return  # cancelled meanwhile, or a driver is due to take them
        loop = self._loop
        task, wake = self._parked, self._wake
        # gone: a handler took it, or someone cancelled it (checks in C: per read)
        if task is None or wake is None or wake.done() or _cancel_asked(task):
            task, wake = self._park_next(), self._wake
            assert wake is not None
        if not self._parked_ready or _current_task(loop) is not None:
            self._start_driver()
            return
        while True:
            waiting = self._step_handlers(task, wake)
            if waiting is None:
                break
            wake.set_result(waiting)
            self._drivers.add(task)  # the handler's task from now on
            # the rest of the read goes on at once in a spare task, if one sleeps
            spare = self._take_spare() if queue else None
            if spare is None:
                break
            task, wake = spare
        if queue:  # after a handler that waited (or cancelled the parked task)
            self._start_driver()
        if wake.done() or _cancel_asked(task):
            self._park_next()  # ready by the next read

    def _step_handlers(
        self, task: asyncio.Task[None], wake: asyncio.Future[Any]
    ) -> tuple[Any, contextvars.Context, Any] | None:
        # The queued handlers, each in a copy of the context with ``task`` as
        # the current task, until one waits (returned) or the queue is empty.
        loop = self._loop
        _enter_task(loop, task)
        try:
            # A cancel of the parked task (a handler's own) cancels what it
            # waits on: the wake, which then takes no handler; checked in C.
            return run_coroutines(
                self._queue, type(wake).done, wake, self._failed, asyncio.CancelledError
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # what a driver Task would have logged
            self._failed(exc)
            return None
        finally:
            _leave_task(loop, task)

    def _take_spare(self) -> tuple[asyncio.Task[None], asyncio.Future[Any]] | None:
        # The latest first; one cancelled while asleep ends by itself.
        spares = self._spares
        while spares:
            task, wake = spares.pop()
            if not wake.done() and not _cancel_asked(task):  # asleep, and nobody cancelled it
                self._parked, self._wake, self._parked_ready = task, wake, True
                return task, wake
        return None

    def _park_next(self) -> asyncio.Task[None]:
        spare = self._take_spare()
        if spare is not None:
            return spare[0]
        wake = self._wake = self._loop.create_future()
        self._parked_ready = False
        task = self._parked = asyncio.Task(self._park(wake), loop=self._loop)
        task.add_done_callback(self._finished)
        return task

    async def _park(self, wake: asyncio.Future[Any]) -> None:
        # Sleeps until a handler stepped in this task waits: then it is the
        # handler's task. When that handler is done, it sleeps on as a spare.
        task = _current_task()
        assert task is not None
        while True:
            if wake is self._wake:
                self._parked_ready = True
            cancel: asyncio.CancelledError | None = None
            try:
                await wake
            except asyncio.CancelledError as error:
                cancel = error
            if not wake.done() or wake.cancelled():
                return  # cancelled while asleep: no handler is its
            coro, context, waiting_on = wake.result()
            try:
                # a cancel that came after the handler took this task is the handler's
                await _resume(coro, context, waiting_on, cancel)
            except Exception as exc:
                self._failed(exc)
            except asyncio.CancelledError:
                return
            next_wake = self._sleep_as_spare(task, cancel)
            if next_wake is None:
                return
            wake = next_wake

    def _sleep_as_spare(
        self, task: asyncio.Task[None], cancel: BaseException | None
    ) -> asyncio.Future[Any] | None:
        # The Task of a handler that is done becomes a spare (what it is to
        # await), unless someone cancelled it: even if the handler took the
        # cancel back, its count would fool a later handler's asyncio.timeout().
        if cancel is not None or task.cancelling() or self._stopped:
            return None
        if len(self._spares) >= SPARE_TASKS:
            return None
        self._drivers.discard(task)  # nobody's handler now
        wake = self._loop.create_future()
        self._spares.append((task, wake))
        return wake

    def _failed(self, exc: BaseException) -> None:
        log.error("%s failed", self._what, exc_info=exc)

    @property
    def pending(self) -> int:
        """How many callbacks are waiting to run or still running."""
        return len(self._queue) + len(self._drivers)

    def cancel(self, reason: BaseException | None = None) -> None:
        """Cancel the callbacks still running and drop those not started.

        The callback that calls this (closing its own channel) is left to finish.

        :param reason: the cancel's message (the error that closed the channel).
        """
        while self._queue:
            self._queue.popleft().close()
        self._taker = None
        self._stopped = True
        current = _current_task(self._loop) if self._loop.is_running() else None
        parked, self._parked = self._parked, None
        if parked is not None and parked is not current:
            parked.cancel()  # no handler is its: it just ends
        spares, self._spares = self._spares, []
        for spare, _ in spares:
            if spare is not current:
                spare.cancel()
        for driver in list(self._drivers):
            if driver is not current:
                driver.cancel(reason)  # leaves the set when it is done
