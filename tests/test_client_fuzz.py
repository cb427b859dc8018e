"""Whole-client fuzzing: a broker that sends broken sessions, the real client over TCP.

A scripted fake peer (``tests/fake_peer.py``) replays a recorded session of a
small client program: the handshake, a channel in confirm mode, a queue
declared and consumed (three deliveries, a body split over three frames),
three confirmed publishes, Basic.Get twice (GetOk, GetEmpty), a Channel.Close
and a Connection.Close from the broker. Each case changes that session with a
few mutations: bytes flipped, erased or stuffed in, a frame's size field
changed, a method's field re-encoded with an odd value, frames dropped,
duplicated, moved between steps or swapped, well-formed frames the broker
may send at any time inserted (Connection.Blocked, Channel.Flow, Basic.Cancel,
Basic.Return, stray acks, frames on channels never opened ...), the writes
split at odd places, and the stream cut (then closed, reset or stalled).

The client program runs against it with the real client: ``amqpfast.core``
in some cases, the aio-pika API (``amqpfast.connect``) in the others, each
call with a timeout. The invariants, checked for every case:

- a call raises only amqpfast's exceptions (:class:`~amqpfast.exceptions.AMQPError`)
  or ``TimeoutError`` (and ``ValueError`` from ``channel()`` when the broker
  does not announce publisher confirms: aiormq's documented answer);
- every call returns within its timeout plus :data:`MARGIN`;
- nothing reaches the loop's exception handler ("Task exception was never
  retrieved", "Exception in callback" ...) and amqpfast logs no traceback of
  an exception that is not its own (an internal error it swallowed);
- the client sends only frames that decode;
- afterwards the client has closed its socket and left no task behind.

The bounded run (:func:`test_fuzzed_sessions_keep_the_invariants`, 200 cases
on each event loop, about 8 s each) is deterministic in what it sends: case
``i`` of seed ``s`` is drawn from ``random.Random(f"{s}:{i}")``, whatever the
timing. A longer run, its figures appended to a file::

    AMQPFAST_FUZZ_CASES=5000 AMQPFAST_FUZZ_SEED=1 AMQPFAST_FUZZ_DEPTH=6 \\
    AMQPFAST_FUZZ_OUT=/tmp/fuzz.jsonl .venv/bin/pytest tests/test_client_fuzz.py \\
        -k keep_the_invariants -s

Options (environment): ``AMQPFAST_FUZZ_CASES`` (cases per event loop,
default 200), ``AMQPFAST_FUZZ_SEED`` (default 0), ``AMQPFAST_FUZZ_DEPTH`` (the
most mutations in one case, default 3), ``AMQPFAST_FUZZ_TIMEOUT`` (each
call's timeout, default 0.25 s), ``AMQPFAST_FUZZ_CONCURRENCY`` (cases run at
once, default 16), ``AMQPFAST_FUZZ_ARCS=0`` (do not count the distinct line
arcs run in amqpfast's Python files; counting costs little: the waits for
timeouts dominate), ``AMQPFAST_FUZZ_OUT`` (a file the figures are appended
to, one JSON line per run). A failing case is printed as a :class:`Case`, to
paste into :data:`REGRESSIONS`; a case may be run on its own with
``fuzz(iter([case]), timeout, 1)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fake_peer import (
    CONSUMER_TAG,
    DELIVERED,
    FETCHED,
    QUEUE,
    Frame,
    ScriptedPeer,
    Step,
    extra_frames,
    method_frame,
    recorded_session,
)
from pamqp import base as pamqp_base

import amqpfast
from amqpfast import _spec
from amqpfast.core import connect as core_connect
from amqpfast.exceptions import (
    AMQPError,
    ChannelNotFoundEntity,
    ConnectionClosed,
    ConnectionForced,
)

pytestmark = pytest.mark.slow

PACKAGE = os.path.dirname(amqpfast.__file__) + os.sep
#: how much longer than its timeout a call may take (a loaded machine, 8 cases at once)
MARGIN = 1.0
CASES = int(os.environ.get("AMQPFAST_FUZZ_CASES", "200"))
SEED = os.environ.get("AMQPFAST_FUZZ_SEED", "0")
TIMEOUT = float(os.environ.get("AMQPFAST_FUZZ_TIMEOUT", "0.25"))
CONCURRENCY = int(os.environ.get("AMQPFAST_FUZZ_CONCURRENCY", "16"))
DEPTH = int(os.environ.get("AMQPFAST_FUZZ_DEPTH", "3"))
ARCS = os.environ.get("AMQPFAST_FUZZ_ARCS", "1") != "0"
OUT = os.environ.get("AMQPFAST_FUZZ_OUT", "")

SESSION = recorded_session()
EXTRAS = extra_frames()


@dataclass(frozen=True)
class Case:
    """One fuzz case: which client program, its consumer callback, the mutations."""

    flavour: str  # "core": amqpfast.core; "api": the aio-pika API
    callback: str  # "sync" or "async"
    mutations: tuple[tuple[Any, ...], ...]
    label: str = ""


# ------------------------------------------------------------ mutations


def _copy(steps: list[Step]) -> list[Step]:
    return [Step(step.trigger, list(step.frames), list(step.writes), step.then) for step in steps]


def _frames(steps: list[Step]) -> list[tuple[int, int]]:
    return [(s, f) for s, step in enumerate(steps) for f in range(len(step.frames))]


def _with_field(method: Any, name: str, value: Any) -> Any:
    if isinstance(method, pamqp_base.Frame):
        changed: Any = object.__new__(type(method))
        for key, old in method:
            setattr(changed, key, value if key == name else old)
        return changed
    return type(method)(**{**dict(method), name: value})


def apply_one(steps: list[Step], mutation: tuple[Any, ...]) -> None:
    """Apply one mutation in place; indexes wrap, so any mutation applies to any session."""
    kind = mutation[0]
    if kind in ("insert", "split", "stop"):
        step = steps[mutation[1] % len(steps)]
        if kind == "insert":
            _, _, pos, name = mutation
            at = pos % (len(step.frames) + 1)
            step.frames[at:at] = EXTRAS[name]
        elif kind == "split":
            step.writes.extend(mutation[2])
        else:
            step.then = mutation[2]
        return
    _, s, f = mutation[:3]
    step = steps[s % len(steps)]
    if not step.frames:
        return
    f %= len(step.frames)
    frame = step.frames[f]
    data = bytearray(frame.data)
    if kind == "byte":
        off, value = mutation[3:]
        if data:
            data[off % len(data)] = value
    elif kind == "erase":
        off, count = mutation[3:]
        del data[off : off + count]
    elif kind == "stuff":
        off, stuffing = mutation[3:]
        data[off:off] = stuffing
    elif kind == "size":
        if len(data) >= 7:
            data[3:7] = (mutation[3] % 2**32).to_bytes(4, "big")
    elif kind == "field":
        name, value = mutation[3:]
        if frame.method is None:
            return
        # a value the codec will not encode: no mutation
        with contextlib.suppress(AMQPError, ValueError, TypeError, OverflowError):
            step.frames[f] = method_frame(frame.channel, _with_field(frame.method, name, value))
        return
    elif kind == "drop":
        del step.frames[f]
        return
    elif kind in ("dup", "move"):
        to_step = steps[mutation[3] % len(steps)]
        if kind == "move":
            del step.frames[f]
        at = mutation[4] % (len(to_step.frames) + 1)
        to_step.frames.insert(at, frame)
        return
    elif kind == "swap":
        g = mutation[3] % len(step.frames)
        step.frames[f], step.frames[g] = step.frames[g], step.frames[f]
        return
    elif kind == "cut":
        off, then = mutation[3:]
        del data[off % (len(data) + 1) :]
        del step.frames[f + 1 :]
        step.then = then
    else:
        raise ValueError(f"unknown mutation {mutation!r}")
    step.frames[f] = Frame(bytes(data))  # its bytes no longer encode a method we know


def apply_all(mutations: tuple[tuple[Any, ...], ...]) -> list[Step]:
    """The recorded session with the mutations applied in order."""
    steps = _copy(SESSION)
    for mutation in mutations:
        apply_one(steps, mutation)
    return steps


_INTEGERS = {
    _spec.OCTET: (0, 1, 255),
    _spec.SHORT: (0, 1, 2, 4095, 65535),
    _spec.LONG: (0, 1, 2, 3, 4095, 4096, 2**31, 2**32 - 1),
    _spec.LONGLONG: (0, 1, 2, 3, 4, 5, 2**63, 2**64 - 1),
    _spec.TIMESTAMP: (0, 2**63),
}
_BITS = {_spec.OCTET: 8, _spec.SHORT: 16, _spec.LONG: 32, _spec.LONGLONG: 64, _spec.TIMESTAMP: 63}
_STRINGS = ("", "ctag", "other", "é", "x" * 255, "a\x00b", "amq.gen-1")
_LONG_STRINGS = ("", "x" * 5000, b"\xff\xfe\x00", "PLAIN", "AMQPLAIN")
_TABLES: tuple[Any, ...] = (
    {},
    {"capabilities": {}},
    {"capabilities": {"publisher_confirms": False}},
    {"capabilities": "yes"},
    {"x": [1, "a", None, {"y": b"\xff"}], "capabilities": {"basic.nack": 1}},
)


def _field_value(rng: random.Random, kind: int, old: Any) -> Any:
    if kind == _spec.BIT:
        return not old
    if kind in _INTEGERS:
        if rng.random() < 0.3:
            return rng.getrandbits(_BITS[kind])
        return rng.choice(_INTEGERS[kind])
    if kind == _spec.SHORTSTR:
        return rng.choice(_STRINGS)
    if kind == _spec.LONGSTR:
        return rng.choice(_LONG_STRINGS)
    return rng.choice(_TABLES)


_KINDS = (
    ("byte", 18),
    ("erase", 5),
    ("stuff", 5),
    ("size", 5),
    ("field", 22),
    ("drop", 8),
    ("dup", 8),
    ("move", 8),
    ("swap", 4),
    ("insert", 16),
    ("split", 6),
    ("cut", 6),
    ("stop", 3),
)
_THEN = ("close", "abort", "stall")


def _layout(method: Any) -> _spec.Fields:
    return () if method is None else _spec.METHODS[method.index][1]


def draw_mutation(rng: random.Random, steps: list[Step]) -> tuple[Any, ...]:
    """One mutation, fit to ``steps`` as they are now."""
    kind = rng.choices([k for k, _ in _KINDS], [w for _, w in _KINDS])[0]
    s = rng.randrange(len(steps))
    if kind == "insert":
        return (kind, s, rng.randrange(8), rng.choice(sorted(EXTRAS)))
    if kind == "split":
        size = sum(len(frame.data) for frame in steps[s].frames)
        return (
            kind,
            s,
            tuple(sorted(rng.randrange(1, size + 2) for _ in range(rng.randint(1, 3)))),
        )
    if kind == "stop":
        return (kind, s, rng.choice(_THEN))
    frames = _frames(steps)
    if kind == "field":
        frames = [(s, f) for s, f in frames if _layout(steps[s].frames[f].method)]
    if not frames:
        return ("stop", s, rng.choice(_THEN))
    s, f = rng.choice(frames)
    frame = steps[s].frames[f]
    size = len(frame.data)
    if not size and kind in ("byte", "erase", "cut"):
        kind = "stuff"  # a frame erased to nothing: only bytes added change it
    if kind == "byte":
        where = rng.random()
        off = (
            rng.randrange(min(7, size))
            if where < 0.35
            else size - 1
            if where < 0.45
            else rng.randrange(size)
        )
        value = rng.choice([rng.randrange(256), 0, 0xFF, frame.data[off] ^ (1 << rng.randrange(8))])
        return (kind, s, f, off, value)
    if kind == "erase":
        return (kind, s, f, rng.randrange(size), rng.randint(1, 8))
    if kind == "stuff":
        return (kind, s, f, rng.randrange(size + 1), rng.randbytes(rng.randint(1, 8)))
    if kind == "size":
        old = size - 8
        new = rng.choice([old - 1, old + 1, 0, old * 2, 2**32 - 1, 4088, 131064, 131065])
        return (kind, s, f, new)
    if kind == "field":
        method = frame.method
        name, code = rng.choice(_layout(method))
        return (kind, s, f, name, _field_value(rng, code, getattr(method, name)))
    if kind in ("dup", "move"):
        to_step = s if rng.random() < 0.5 else rng.randrange(len(steps))
        return (kind, s, f, to_step, rng.randrange(len(steps[to_step].frames) + 1))
    if kind == "swap":
        return (kind, s, f, rng.randrange(len(steps[s].frames)))
    if kind == "cut":
        return (kind, s, f, rng.randrange(size), rng.choice(_THEN))
    return (kind, s, f)  # drop


def draw_case(seed: str, index: int) -> Case:
    """Case ``index`` of ``seed``: the same mutations on every run."""
    rng = random.Random(f"{seed}:{index}")
    flavour = "api" if rng.random() < 0.35 else "core"
    callback = rng.choice(("sync", "async"))
    steps = _copy(SESSION)
    mutations = []
    weights = [50, 30, 20, *[10] * (DEPTH - 3)][:DEPTH]
    for _ in range(rng.choices(range(1, DEPTH + 1), weights)[0]):
        mutation = draw_mutation(rng, steps)
        apply_one(steps, mutation)
        mutations.append(mutation)
    return Case(flavour, callback, tuple(mutations), f"{seed}:{index}")


# ------------------------------------------------------------ the client program


def _raised_at(error: BaseException) -> str:
    """The innermost place in amqpfast the exception went through."""
    where = "-"
    for frame, line in traceback.walk_tb(error.__traceback__):
        filename = frame.f_code.co_filename
        if filename.startswith(PACKAGE):
            where = f"{filename[len(PACKAGE) :]}:{frame.f_code.co_name}:{line}"
    return where


@dataclass
class Run:
    """What one case did: each call's outcome and every broken invariant."""

    case: Case
    timeout: float
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    overrun: float = 0.0  # the most a call took beyond its timeout
    delivered: list[bytes] = field(default_factory=list)
    results: dict[str, list[Any]] = field(default_factory=dict)

    async def call(
        self, name: str, make: Callable[[], Awaitable[Any]], own_timeout: bool = True
    ) -> Any:
        """Run one call; None if it failed. ``own_timeout``: it takes ``timeout=``.

        A call without one gets an ``asyncio.timeout`` of that length. Either
        way a guard of ``timeout + MARGIN`` catches a call that overruns it.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome, result = "ok", None
        try:
            async with asyncio.timeout(self.timeout + MARGIN) as guard:
                if own_timeout:
                    result = await make()
                else:
                    async with asyncio.timeout(self.timeout):
                        result = await make()
        except TimeoutError as error:
            outcome = f"{type(error).__name__}@{_raised_at(error)}"
            if guard.expired():
                self.violations.append(f"{name}: no return within {self.timeout} + {MARGIN} s")
        except AMQPError as error:
            code = getattr(error, "reply_code", "")
            outcome = f"{type(error).__name__}{code}@{_raised_at(error)}"
        except ValueError as error:
            outcome = f"ValueError@{_raised_at(error)}"
            if "does not support publisher confirms" not in str(error):
                self._escaped(name, error)
        except Exception as error:
            outcome = f"{type(error).__name__}@{_raised_at(error)}"
            self._escaped(name, error)
        except asyncio.CancelledError as error:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the test itself is being cancelled
            outcome = f"CancelledError@{_raised_at(error)}"
            self._escaped(name, error)
        took = loop.time() - started
        self.overrun = max(self.overrun, took - self.timeout)
        if took > self.timeout + MARGIN + 0.1:
            self.violations.append(f"{name}: took {took:.2f} s (timeout {self.timeout} s)")
        self.outcomes.append((name, outcome.split("@")[0], outcome))
        self.results.setdefault(name, []).append(result)
        return result

    def _escaped(self, name: str, error: BaseException) -> None:
        trace = "".join(traceback.format_exception(error)[-6:])
        self.violations.append(f"{name}: {type(error).__name__} escaped: {error!r}\n{trace}")

    # ---------------------------------------------------------- consumer callbacks

    def _check_message(self, body: Any) -> None:
        if not isinstance(body, bytes):
            self.violations.append(f"a delivery's body is {type(body).__name__}")
        else:
            self.delivered.append(body)

    def low_level_callback(self) -> Callable[[Any], Any]:
        def on_message(message: Any) -> None:
            self._check_message(message.body)
            with contextlib.suppress(AMQPError):
                message.channel.basic_ack(message.delivery_tag)

        async def on_message_async(message: Any) -> None:
            self._check_message(message.body)
            await asyncio.sleep(0)
            with contextlib.suppress(AMQPError):
                await message.channel.basic_ack(message.delivery_tag)

        return on_message if self.case.callback == "sync" else on_message_async

    def api_callback(self) -> Callable[[Any], Any]:
        async def on_message(message: Any) -> None:
            self._check_message(message.body)
            if self.case.callback == "async":
                await asyncio.sleep(0)
            try:
                async with message.process():
                    pass
            except AMQPError:
                pass

        return on_message

    # ---------------------------------------------------------- the programs

    async def low_level(self, url: str) -> None:
        """The program on ``amqpfast.core``."""
        t = self.timeout
        context = core_connect(url, timeout=t)
        conn = await self.call("connect", lambda: context)
        try:
            if conn is None:
                return
            channel = await self.call("channel", lambda: conn.channel(timeout=t))
            if channel is not None:
                callback = self.low_level_callback()
                await self.call("queue_declare", lambda: channel.queue_declare(QUEUE, timeout=t))
                await self.call(
                    "basic_consume",
                    lambda: channel.basic_consume(
                        QUEUE, callback, consumer_tag=CONSUMER_TAG, timeout=t
                    ),
                )
                await asyncio.gather(
                    *(
                        self.call(
                            "basic_publish",
                            lambda body=body: channel.basic_publish(
                                body, routing_key=QUEUE, timeout=t
                            ),
                        )
                        for body in (b"one", b"two", b"three")
                    )
                )
                await self.call("basic_get", lambda: channel.basic_get(QUEUE, timeout=t))
                await self.call("basic_get_empty", lambda: channel.basic_get(QUEUE, timeout=t))
                await self.call(
                    "declare_missing",
                    lambda: channel.queue_declare("missing", passive=True, timeout=t),
                )
            second = await self.call(
                "channel2", lambda: conn.channel(publisher_confirms=False, timeout=t)
            )
            if second is not None:
                await self.call("basic_qos", lambda: second.basic_qos(prefetch_count=1, timeout=t))
        finally:
            await self.call("close", lambda: context.connection.close(timeout=t))
            if not context.connection.is_closed:
                self.violations.append("the connection is not closed after close()")

    async def high_level(self, url: str) -> None:
        """The program on the aio-pika API."""
        t = self.timeout
        connection = await self.call("connect", lambda: amqpfast.connect(url, timeout=t))
        if connection is None:
            return
        try:
            channel = await self.call("channel", lambda: connection.channel(), own_timeout=False)
            if channel is not None:
                queue = await self.call(
                    "declare_queue", lambda: channel.declare_queue(QUEUE, timeout=t)
                )
                if queue is not None:
                    await self.call(
                        "consume",
                        lambda: queue.consume(
                            self.api_callback(), consumer_tag=CONSUMER_TAG, timeout=t
                        ),
                    )
                await asyncio.gather(
                    *(
                        self.call(
                            "publish",
                            lambda body=body: channel.default_exchange.publish(
                                amqpfast.Message(body), routing_key=QUEUE, timeout=t
                            ),
                        )
                        for body in (b"one", b"two", b"three")
                    )
                )
                if queue is not None:
                    message = await self.call("get", lambda: queue.get(fail=False, timeout=t))
                    if message is not None:
                        self._check_message(message.body)
                        await self.call("ack", lambda: message.ack(), own_timeout=False)
                    await self.call("get_empty", lambda: queue.get(fail=False, timeout=t))
                await self.call(
                    "declare_missing",
                    lambda: channel.declare_queue("missing", passive=True, timeout=t),
                )
            second = await self.call(
                "channel2", lambda: connection.channel(publisher_confirms=False), own_timeout=False
            )
            if second is not None:
                await self.call("set_qos", lambda: second.set_qos(prefetch_count=1, timeout=t))
        finally:
            await self.call("close", lambda: connection.close(), own_timeout=False)
            if not connection.is_closed:
                self.violations.append("the connection is not closed after close()")


async def run_case(case: Case, timeout: float) -> Run:
    """Play one case: the mutated session against the client program."""
    run = Run(case, timeout)
    async with ScriptedPeer(apply_all(case.mutations)) as peer:
        if case.flavour == "core":
            await run.low_level(peer.url)
        else:
            await run.high_level(peer.url)
        if not await peer.wait_closed_by_client(1.0):
            run.violations.append("the client left its socket open")
    run.violations += peer.problems
    return run


# ------------------------------------------------------------ watching the loop


class _Watch(logging.Handler):
    """Collects what must not happen outside a call: loop errors, swallowed tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.problems: list[str] = []

    def loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        detail = "".join(traceback.format_exception(error)[-6:]) if error else ""
        self.problems.append(f"loop: {context.get('message')}: {error!r}\n{detail}")

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and not isinstance(error, AMQPError):
            detail = "".join(traceback.format_exception(error)[-6:])
            self.problems.append(f"logged: {record.getMessage()}: {error!r}\n{detail}")


class LoopBlocked(Exception):
    """Raised in the main thread when the event loop has not turned for a while."""


class _Watchdog:
    """Breaks into a loop blocked for ``limit`` seconds (a callback that never returns).

    A tick scheduled on the loop marks it alive; SIGALRM, checked every 0.25 s,
    raises :class:`LoopBlocked` in whatever runs when the ticks stop: the
    blocking call then fails inside the loop, which reports it.
    """

    def __init__(self, watch: _Watch, limit: float = 3.0) -> None:
        self.watch = watch
        self.limit = limit
        self.alive = time.monotonic()
        self._tick: asyncio.TimerHandle | None = None

    def __enter__(self) -> _Watchdog:
        self._loop = asyncio.get_running_loop()
        self._ticked()
        self._previous = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, 0.25, 0.25)
        return self

    def __exit__(self, *exc_info: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._previous)
        if self._tick is not None:
            self._tick.cancel()

    def _ticked(self) -> None:
        self.alive = time.monotonic()
        self._tick = self._loop.call_later(0.05, self._ticked)

    def _alarm(self, signum: int, frame: Any) -> None:
        blocked = time.monotonic() - self.alive
        if blocked > self.limit:
            self.alive = time.monotonic()  # once per block
            where = "".join(traceback.format_stack(frame)[-4:])
            self.watch.problems.append(f"the event loop was blocked for {blocked:.1f} s:\n{where}")
            raise LoopBlocked(f"the event loop was blocked for {blocked:.1f} s")


class _Arcs:
    """Line arcs run in amqpfast's Python files (sys.settrace: slow, optional)."""

    def __init__(self) -> None:
        self.arcs: set[tuple[str, int, int]] = set()

    def __enter__(self) -> _Arcs:
        self._previous = sys.gettrace()
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc_info: object) -> None:
        sys.settrace(self._previous)

    def _call(self, frame: Any, event: str, arg: Any) -> Any:
        code = frame.f_code
        filename = code.co_filename
        if not filename.startswith(PACKAGE):
            return None
        arcs = self.arcs
        last = -code.co_firstlineno

        def local(frame: Any, event: str, arg: Any) -> Any:
            nonlocal last
            if event == "line":
                arcs.add((filename, last, frame.f_lineno))
                last = frame.f_lineno
            elif event == "return":
                arcs.add((filename, last, -code.co_firstlineno))
            return local

        return local


@dataclass
class Figures:
    """What a fuzz run did."""

    executions: int = 0
    calls: int = 0
    signatures: set[tuple[str, str, str]] = field(default_factory=set)
    paths: set[tuple[Any, ...]] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    arcs: set[tuple[str, int, int]] = field(default_factory=set)
    overrun: float = 0.0
    escapes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def take(self, run: Run) -> None:
        self.executions += 1
        self.calls += len(run.outcomes)
        self.overrun = max(self.overrun, run.overrun)
        path = []
        for name, kind, outcome in run.outcomes:
            self.signatures.add((run.case.flavour, name, outcome))
            self.outcomes[kind] += 1
            path.append((name, kind))
        self.paths.add((run.case.flavour, *path))
        for violation in run.violations:
            self.escapes.append(f"{run.case!r}\n  {violation}")

    def summary(self) -> dict[str, Any]:
        return {
            "executions": self.executions,
            "calls": self.calls,
            "distinct outcomes (call, exception, where)": len(self.signatures),
            "distinct paths (outcome sequences)": len(self.paths),
            "distinct arcs in amqpfast/*.py": len(self.arcs),
            "most a call took past its timeout (s)": round(self.overrun, 3),
            "escapes": len(self.escapes),
            "seconds": round(self.seconds, 1),
            "outcomes": dict(self.outcomes.most_common()),
        }


async def _settle(baseline: set[asyncio.Task[Any]], limit: float = 1.0) -> list[str]:
    """Wait until the tasks started since ``baseline`` are done; the reprs of those left."""
    deadline = time.monotonic() + limit
    while True:
        gc.collect()  # "never retrieved" is reported when the future is collected
        left = [task for task in asyncio.all_tasks() if task not in baseline and not task.done()]
        if not left or time.monotonic() > deadline:
            return [repr(task) for task in left]
        await asyncio.sleep(0.01)


async def fuzz(
    cases: Iterator[Case],
    timeout: float,
    concurrency: int,
    keep: list[Run] | None = None,
) -> Figures:
    """Run the cases, ``concurrency`` at a time; the figures and every broken invariant."""
    figures = Figures()
    loop = asyncio.get_running_loop()
    watch = _Watch()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(watch.loop_error)
    logger = logging.getLogger("amqpfast")
    logger.addHandler(watch)
    baseline = set(asyncio.all_tasks())
    # not under a tracer of someone else's (coverage): it would lose its trace
    arcs = _Arcs() if ARCS and sys.gettrace() is None else None
    started = time.monotonic()
    watchdog = _Watchdog(watch).__enter__()
    try:
        if arcs is not None:
            arcs.__enter__()
        batch: list[Case] = []
        for case in [*cases, None]:
            if case is not None:
                batch.append(case)
                if len(batch) < concurrency:
                    continue
            if not batch:
                break
            runs = await asyncio.gather(*(run_case(each, timeout) for each in batch))
            if keep is not None:
                keep += runs
            left = await _settle(baseline)
            for run in runs:
                figures.take(run)
            labels = ", ".join(each.label or repr(each) for each in batch)
            if left:
                figures.escapes.append(f"tasks left after cases {labels}: {left}")
            if watch.problems:
                figures.escapes += [f"cases {labels}: {p}" for p in watch.problems]
                watch.problems.clear()
            batch = []
    finally:
        watchdog.__exit__()
        if arcs is not None:
            arcs.__exit__()
            figures.arcs = arcs.arcs
        logger.removeHandler(watch)
        loop.set_exception_handler(previous_handler)
    figures.seconds = time.monotonic() - started
    return figures


# ------------------------------------------------------------ the tests


def _cases(count: int, seed: str) -> Iterator[Case]:
    return (draw_case(seed, index) for index in range(count))


@pytest.mark.parametrize("flavour", ["core", "api"])
@pytest.mark.parametrize("callback", ["sync", "async"])
async def test_the_recorded_session_replays_cleanly(flavour, callback):
    # the fuzzer's baseline: unchanged, the session gives the program what it asks for
    figures = await fuzz(iter([Case(flavour, callback, ())]), timeout=2.0, concurrency=1)
    assert figures.escapes == []
    [path] = figures.paths
    calls = {
        "core": "connect channel queue_declare basic_consume basic_publish basic_publish"
        " basic_publish basic_get basic_get_empty declare_missing channel2 basic_qos close",
        "api": "connect channel declare_queue consume publish publish publish get ack"
        " get_empty declare_missing channel2 set_qos close",
    }[flavour].split()
    failing = {
        "declare_missing": ChannelNotFoundEntity.__name__ + "404",
        "basic_qos": ConnectionForced.__name__ + "320",
        "set_qos": ConnectionForced.__name__ + "320",
    }
    assert path == (flavour, *((name, failing.get(name, "ok")) for name in calls))


async def test_the_recorded_session_delivers_what_it_recorded():
    run = await run_case(Case("core", "sync", ()), timeout=2.0)
    assert run.violations == []
    assert run.delivered == list(DELIVERED)
    [fetched] = run.results["basic_get"]
    assert fetched.body == FETCHED
    [empty] = run.results["basic_get_empty"]
    assert empty.delivery.name == "Basic.GetEmpty"
    assert sorted(ack.delivery_tag for ack in run.results["basic_publish"]) == [1, 3, 3]


async def test_fuzzed_sessions_keep_the_invariants():
    figures = await fuzz(_cases(CASES, SEED), TIMEOUT, CONCURRENCY)
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    summary = {"loop": loop, "seed": SEED, "depth": DEPTH, **figures.summary()}
    shown = {key: value for key, value in summary.items() if key != "outcomes"}
    print(f"\nwhole-client fuzzing: {json.dumps(shown)}")
    if OUT:
        with open(OUT, "a") as out:
            out.write(json.dumps(summary) + "\n")
    assert figures.executions == CASES
    assert not figures.escapes, "\n\n".join(figures.escapes[:10])


# Cases the fuzzer found that broke an invariant, each fixed since.
REGRESSIONS = [
    # A Basic.Ack (or Nack) with multiple set and delivery tag 2**64 - 1 made
    # the confirm loop count to 2**64: the event loop never turned again.
    # Tags past the last publish are not looked for now.
    pytest.param(
        Case("core", "sync", (("insert", 10, 5, "ack-huge-multiple"),)), {}, id="huge-ack"
    ),
    pytest.param(
        Case("core", "sync", (("insert", 7, 0, "ack-huge-multiple"),)),
        {"basic_publish": "ok"},
        id="huge-ack-confirms-all",
    ),
    pytest.param(
        Case("api", "async", (("insert", 10, 0, "nack-huge-multiple"),)), {}, id="huge-nack"
    ),
    pytest.param(
        Case("core", "sync", (("insert", 7, 0, "nack-huge-multiple"),)),
        {"basic_publish": "DeliveryError"},
        id="huge-nack-fails-all",
    ),
    # A Connection.UpdateSecretOk before Connection.Start was taken for the
    # Start the handshake waited for: AttributeError out of connect(). Only
    # update_secret() takes it now; a stray one is logged.
    pytest.param(
        Case("core", "sync", (("insert", 0, 0, "update-secret-ok"),)),
        {"connect": "ok", "basic_publish": "ok"},
        id="update-secret-ok-first",
    ),
    # A Queue.DeclareOk naming the queue "a\x00b": the aio-pika API took the
    # name and the next method on the queue failed pamqp's check with a
    # ValueError. Such a name is a syntax error of the broker's now (502).
    pytest.param(
        Case("api", "sync", (("field", 5, 0, "queue", "a\x00b"),)),
        {"declare_queue": "ConnectionProtocolError502"},
        id="declare-ok-bad-queue-name",
    ),
    pytest.param(
        Case("core", "async", (("field", 5, 0, "queue", "é"),)),
        {"queue_declare": "ConnectionProtocolError502"},
        id="declare-ok-bad-queue-name-core",
    ),
]


@pytest.mark.parametrize(("case", "expected"), REGRESSIONS)
async def test_regressions(case, expected):
    runs: list[Run] = []
    figures = await fuzz(iter([case]), timeout=0.5, concurrency=1, keep=runs)
    assert not figures.escapes, "\n\n".join(figures.escapes)
    [run] = runs
    for name, kind, _ in run.outcomes:
        if name in expected:
            assert kind == expected[name], run.outcomes


async def test_a_write_while_the_socket_closes_is_dropped_quietly():
    # Found on uvloop: a publish between the transport's close (on EOF) and
    # connection_lost scheduled a flush that ran after connection_lost, and
    # uvloop's transport raised RuntimeError into the loop ("Exception in
    # callback Connection._flush"). The flush drops the bytes now.
    watch = _Watch()
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(watch.loop_error)
    try:
        async with ScriptedPeer(SESSION[:5]) as peer:
            conn = await core_connect(peer.url, timeout=5)
            channel = await conn.channel()
            conn._protocol.transport.close()  # what the loop does on EOF; connection_lost follows
            channel.basic_ack(1)  # its flush is scheduled behind connection_lost
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(conn.closing, 5)
            await asyncio.sleep(0.01)  # the flush has run
    finally:
        loop.set_exception_handler(previous)
    assert watch.problems == []
