"""The fault matrix: each operation under each fault, plain and robust, timed.

Faults: a stalled peer (the proxy forwards nothing), a slow link (the proxy
forwards in pieces of 16 bytes with a pause before each), a reset (the proxy
cuts the connection), a broker-side close (rabbitmqctl), and on the run's
private node a memory alarm, a clean restart and a kill -9. Operations:
publish without and with confirms, consume with a callback and with an
iterator, ``queue.get``, ``declare_queue``, ``channel.close()`` and
``connection.close()``, each on a connection of its own (``connect`` and
``connect_robust``) named after its cell.

When the operation starts: right after a stall, a slow-down or a cut (the
same step: the call is under way when the reset comes); once the client has
seen a broker-side close, a restart or a kill (its connection closed); once
the broker has blocked the connection for the memory alarm (after a
publish). The consumers have a message to take: ``get`` and the callback
consumer one waiting in the queue, the iterator (consuming since before
the fault) one published from outside as the fault begins (none while the
node is down or blocks publishers). The consumers take messages with
acknowledgements (not ``no_ack``): a message the broker hands to a consumer
whose connection is going away goes back to the queue, and to the consumer
restored after the reconnect, instead of being lost.

All the cells of a fault run at once, as one round on one event loop: the
first test of a round runs it, and every test asserts its own cell:

- the outcome: success ("ok"), or the exception named in :data:`EXPECTED`;
- the time to it: within the call's timeout (:func:`bound`) plus :data:`MARGIN`;
- afterwards: the operation succeeds again on a robust connection (once it
  is back) and on a plain one the fault left open; no closed channel keeps
  its number; once the cell has closed its connection, no task of the cell
  is left and the broker lists no connection of that name.

Every round runs on asyncio and uvloop, but the restart and the kill of the
private node (each waits for a boot of some seconds): asyncio only. A loop
exception ("Future exception was never retrieved" ...) that carries the
error a cell's connection closed with fails that cell too.
At the end of the module the matrix (fault, operation, plain or robust,
outcome, seconds) goes as JSON and as a Markdown table to pytest's base
temporary directory (and to ``$AMQPFAST_FAULT_MATRIX_OUT`` when set), and is
printed (``pytest -s`` shows it): RELIABILITY.md's "Fault matrix" is pasted
from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import json
import os
import re
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from broker_tools import BROKER_HOST, BROKER_PORT, TCPProxy, rabbitmqctl

import amqpfast
from amqpfast import Message
from amqpfast.core import Channel as CoreChannel
from amqpfast.core import Connection as CoreConnection
from amqpfast.core import connect as core_connect
from amqpfast.exceptions import AMQPError
from amqpfast.testing import RabbitNode, with_query

pytestmark = pytest.mark.broker

T = 1.0  # the timeout every operation is given
MARGIN = 0.5  # how much later than its bound an outcome may come
WAIT = 20.0  # for what the broker or the node does: a boot, a recovery, a cleanup
HANG = 5.0  # past its bound plus this, an operation counts as hanging
RECONNECT_INTERVAL = 0.2  # connect_robust's reconnect_interval
SLOW_DELAY, SLOW_PIECE = 0.02, 16  # the slow link: 16 bytes, then 20 ms, ...

OPS = (
    "publish",
    "publish-confirm",
    "consume-callback",
    "consume-iterator",
    "get",
    "declare-queue",
    "channel-close",
    "connection-close",
)
KINDS = ("plain", "robust")
PROXY_FAULTS = ("stall", "slow", "cut")
SHARED_FAULTS = (*PROXY_FAULTS, "broker-close")
NODE_FAULTS = ("memory-alarm", "restart", "kill")
# the faults that take a boot of the node: on asyncio only
BOOT_FAULTS = ("restart", "kill")
# faults the client meets as an event: its operation starts once it has seen it
EVENT_FAULTS = ("broker-close", "restart", "kill")

OK = "ok"
TIMEOUT = "TimeoutError"
ENDS = "StopAsyncIteration"  # the iteration ends (``async for`` leaves its loop)
INVALID = "ChannelInvalidStateError"
CLOSED = "ConnectionClosed"


def bound(op: str) -> float:
    """The longest an operation may take: its timeout.

    A wait of the iterator that times out closes the iterator (cancels its
    consumer) before raising, and that close gets the same timeout again, as
    in aio-pika 10.2.1's ``QueueIterator.__anext__``: twice the timeout.
    """
    return 2 * T if op == "consume-iterator" else T


def _expected() -> dict[tuple[str, str, str], str]:
    table: dict[tuple[str, str, str], str] = {}

    def row(fault: str, plain: dict[str, str], robust: dict[str, str] | None = None) -> None:
        for op in OPS:
            table[(fault, op, "plain")] = plain[op]
            table[(fault, op, "robust")] = (robust or plain)[op]

    # Nothing comes back: each wait for the broker times out. A publish
    # without confirms has nothing to wait for; a channel close without its
    # CloseOk closes the channel all the same after CHANNEL_CLOSE_TIMEOUT;
    # connection.close() (no timeout argument) is given T by asyncio.timeout.
    silent = {
        "publish": OK,
        "publish-confirm": TIMEOUT,
        "consume-callback": TIMEOUT,
        "consume-iterator": TIMEOUT,
        "get": TIMEOUT,
        "declare-queue": TIMEOUT,
        "channel-close": OK,
        "connection-close": TIMEOUT,
    }
    row("stall", silent)
    # 16 bytes every 20 ms: slow, and every frame split across reads, but
    # within the timeout
    row("slow", dict.fromkeys(OPS, OK))
    # a reset under a call: the call fails with the connection's error; a
    # publish without confirms was written (and is lost)
    cut = {
        "publish": OK,
        "publish-confirm": CLOSED,
        "consume-callback": CLOSED,
        "consume-iterator": ENDS,
        "get": CLOSED,
        "declare-queue": CLOSED,
        "channel-close": CLOSED,
        "connection-close": OK,
    }
    # a robust channel is closed for good by close(), whatever the connection
    # does meanwhile; its iterator waits through the reconnect (a fast one)
    row("cut", cut, {**cut, "consume-iterator": OK, "channel-close": OK})
    # Connection.Close from the broker (or a lost socket) seen, then the
    # call: the channel is closed at once; the plain iterator ends. Robust
    # calls other than publish wait for the restore, as aio-pika's do: done
    # when the reconnect is fast, else their timeout (the node is still down)
    after_loss = {
        "publish": INVALID,
        "publish-confirm": INVALID,
        "consume-callback": INVALID,
        "consume-iterator": ENDS,
        "get": INVALID,
        "declare-queue": INVALID,
        "channel-close": OK,
        "connection-close": OK,
    }
    waiting = ("consume-callback", "consume-iterator", "get", "declare-queue")
    row("broker-close", after_loss, {**after_loss, **dict.fromkeys(waiting, OK)})
    row("restart", after_loss, {**after_loss, **dict.fromkeys(waiting, TIMEOUT)})
    row("kill", after_loss, {**after_loss, **dict.fromkeys(waiting, TIMEOUT)})
    # a blocked connection: the client holds publishes back until unblocked,
    # and the broker reads nothing more from it
    row("memory-alarm", {**silent, "publish": TIMEOUT})
    return table


#: (fault, operation, "plain" or "robust") -> the outcome it must have
EXPECTED = _expected()


class NoDelivery(Exception):
    """The consumer started, but the message did not reach its callback in time."""


# ---------------------------------------------------------------- cells and rounds

# The cell a task works for: tasks inherit it from the task that made them,
# so that a task left over is blamed on its cell.
CELL: contextvars.ContextVar[str | None] = contextvars.ContextVar("fault_matrix_cell", default=None)


@dataclass
class Cell:
    """One operation under one fault, on a connection of its own."""

    fault: str
    op: str
    kind: str
    loop: str
    name: str
    outcome: str = "-"
    error: str = ""
    seconds: float | None = None
    after: str = "-"  # the operation again once the fault is over
    after_error: str = ""
    after_seconds: float | None = None
    recovery_seconds: float | None = None  # from the fault's end until usable again
    reconnected_at: float | None = None  # loop time: a robust connection's reconnect_callbacks
    problems: list[str] = field(default_factory=list)
    # the live objects, not part of the record
    url: str = ""
    connection: Any = None
    channel: Any = None
    queue: Any = None
    iterator: Any = None
    trigger: Any = None  # the memory alarm's: a channel that publishes to be blocked
    proxy: TCPProxy | None = None
    low_levels: list[CoreConnection] = field(default_factory=list)
    stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    got: asyncio.Future[Any] | None = None
    declared: int = 0
    background: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def robust(self) -> bool:
        return self.kind == "robust"

    @property
    def queue_name(self) -> str:
        return f"{self.name}.q"

    def record(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "operation": self.op,
            "robust": self.robust,
            "loop": self.loop,
            "expected": EXPECTED.get((self.fault, self.op, self.kind)),
            "outcome": self.outcome,
            "error": self.error,
            "seconds": _rounded(self.seconds),
            "bound": bound(self.op),
            "after": self.after,
            "after_error": self.after_error,
            "after_seconds": _rounded(self.after_seconds),
            "recovery_seconds": _rounded(self.recovery_seconds),
            "problems": self.problems,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Barrier:
    """Counts the cells that got somewhere (each once)."""

    def __init__(self) -> None:
        self._arrived: set[str] = set()
        self._changed = asyncio.Event()

    def arrive(self, cell: Cell) -> None:
        self._arrived.add(cell.name)
        self._changed.set()

    async def wait(self, count: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while len(self._arrived) < count:
                self._changed.clear()
                await self._changed.wait()


class Side:
    """A plain connection of the harness that publishes from outside the cells.

    It connects again when a fault took it down too; its work runs in tasks
    that belong to no cell.
    """

    def __init__(self, url: str) -> None:
        self.url = with_query(url, name=f"fm-side-{uuid.uuid4().hex[:8]}")
        self._connection: CoreConnection | None = None
        self._channel: CoreChannel | None = None
        self._lock = asyncio.Lock()
        self._context = contextvars.copy_context()
        self._context.run(CELL.set, None)

    async def _publish(self, queue: str) -> None:
        async with self._lock:
            for attempt in range(3):
                if self._connection is None or self._channel is None or self._channel.is_closed:
                    if self._connection is not None:
                        await self._connection.close()
                    self._connection = await core_connect(self.url, timeout=WAIT)
                    self._channel = await self._connection.channel(timeout=WAIT)
                try:
                    await self._channel.basic_publish(b"m", routing_key=queue, timeout=WAIT)
                    return
                except AMQPError:
                    # the fault closed this connection too (a broker-side close
                    # of the vhost) before the client here saw it: again
                    if attempt == 2:
                        raise
                    await self._channel.close()

    def publish_soon(self, queue: str) -> asyncio.Task[None]:
        """Publish one message to ``queue`` (confirmed), in a task of no cell."""
        loop = asyncio.get_running_loop()
        return loop.create_task(self._publish(queue), context=self._context)

    async def publish(self, queue: str) -> None:
        await self.publish_soon(queue)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


@dataclass
class Round:
    """The cells of one fault on one loop, and the moments they share."""

    fault: str
    loop: str
    url: str
    node: RabbitNode | None = None
    vhost: str = ""
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # the round's own, blamed on no cell
    loop_exceptions: list[dict[str, Any]] = field(default_factory=list)
    loop_exception_texts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    side: Side | None = None
    ready: Barrier = field(default_factory=Barrier)
    ops_done: Barrier = field(default_factory=Barrier)
    hit: asyncio.Event = field(default_factory=asyncio.Event)
    over: asyncio.Event = field(default_factory=asyncio.Event)
    fault_end: float = 0.0  # loop time: the fault lifted (or, a single event, happened)


_ROUNDS: dict[tuple[str, str], Round] = {}


def loop_name() -> str:
    return "uvloop" if "uvloop" in type(asyncio.get_running_loop()).__module__ else "asyncio"


async def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Whether ``predicate`` came true within ``timeout`` seconds (polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


# ---------------------------------------------------------------- a cell's life


async def setup(cell: Cell, rnd: Round) -> None:
    url = rnd.url
    if cell.fault in PROXY_FAULTS:
        cell.proxy = await TCPProxy(BROKER_HOST, BROKER_PORT).start()
        url = cell.proxy.url(url)
    if cell.robust:
        cell.url = with_query(url, name=cell.name, reconnect_interval=RECONNECT_INTERVAL)
        cell.connection = await amqpfast.connect_robust(cell.url, timeout=WAIT)

        def reconnected(_connection: Any) -> None:
            cell.reconnected_at = asyncio.get_running_loop().time()

        cell.connection.reconnect_callbacks.add(reconnected)
    else:
        cell.url = with_query(url, name=cell.name)
        cell.connection = await amqpfast.connect(cell.url, timeout=WAIT)
    cell.low_levels.append(cell.connection.connection)
    await open_channel(cell)
    if cell.op in ("consume-callback", "get"):
        assert rnd.side is not None
        await rnd.side.publish(cell.queue_name)  # there is a message to take
    if cell.op == "consume-iterator":
        cell.iterator = await cell.stack.enter_async_context(cell.queue.iterator(timeout=T))
    if cell.fault == "memory-alarm":
        cell.trigger = await cell.connection.channel(publisher_confirms=False)


async def open_channel(cell: Cell) -> None:
    """The cell's channel (confirms on, except for a publish without them) and queue."""
    cell.channel = await cell.connection.channel(publisher_confirms=cell.op != "publish")
    cell.queue = await cell.channel.declare_queue(cell.queue_name, timeout=WAIT)


async def noticed(cell: Cell) -> None:
    """Wait until the client under test has met a fault that the round raised."""
    connection = cell.low_levels[0]
    if cell.fault in EVENT_FAULTS:
        with contextlib.suppress(Exception):
            await connection.closing
    elif cell.fault == "memory-alarm":
        # the broker blocks a connection when it next publishes
        await cell.trigger.default_exchange.publish(Message(b"trigger"), cell.queue_name)
        if not await wait_until(lambda: connection.is_blocked, WAIT):
            raise AssertionError("the broker did not block the connection")


def hit_cell(cell: Cell) -> None:
    """The proxy faults, each cell on its own proxy, right before the operation."""
    proxy = cell.proxy
    if cell.fault == "stall":
        assert proxy is not None
        proxy.stall()
    elif cell.fault == "slow":
        assert proxy is not None
        proxy.slow(SLOW_DELAY, SLOW_PIECE)
    elif cell.fault == "cut":
        assert proxy is not None
        proxy.cut()


def on_message(cell: Cell) -> Callable[[Any], None]:
    def take(_message: Any) -> None:
        got = cell.got
        if got is not None and not got.done():
            got.set_result(None)

    return take


async def do_op(cell: Cell, rnd: Round, during: bool) -> None:
    """The operation, given the timeout T (asyncio.timeout where it takes none)."""
    op = cell.op
    loop = asyncio.get_running_loop()
    if op in ("publish", "publish-confirm"):
        await cell.channel.default_exchange.publish(Message(b"op"), cell.queue_name, timeout=T)
    elif op == "consume-callback":
        if during or cell.got is None:
            cell.got = loop.create_future()
        started = loop.time()
        await cell.queue.consume(on_message(cell), timeout=T)
        try:
            async with asyncio.timeout(max(0.0, T - (loop.time() - started))):
                await cell.got
        except TimeoutError:
            raise NoDelivery("consuming, but no message within the timeout") from None
    elif op == "consume-iterator":
        if during and cell.fault in ("stall", "slow", "cut", "broker-close"):
            assert rnd.side is not None
            cell.background.append(rnd.side.publish_soon(cell.queue_name))
        await cell.iterator.__anext__()
    elif op == "get":
        await cell.queue.get(no_ack=True, timeout=T)
    elif op == "declare-queue":
        cell.declared += 1
        await cell.channel.declare_queue(f"{cell.queue_name}.{cell.declared}", timeout=T)
    elif op == "channel-close":
        await cell.channel.close()  # bounded by CHANNEL_CLOSE_TIMEOUT, set to T here
    elif op == "connection-close":
        async with asyncio.timeout(T):
            await cell.connection.close()
    else:
        raise AssertionError(f"unknown operation {op}")


async def timed(cell: Cell, rnd: Round, during: bool) -> tuple[str, str, float]:
    """Run the operation: its outcome, the error's text, and the seconds it took.

    Called right after the fault (no task in between: the operation's first
    step runs before the loop could tell the client of a reset).
    """
    loop = asyncio.get_running_loop()
    guard = asyncio.timeout(bound(cell.op) + HANG)
    error: BaseException | None = None
    started = loop.time()
    try:
        async with guard:
            await do_op(cell, rnd, during)
    except (Exception, StopAsyncIteration) as caught:
        error = caught
    took = loop.time() - started
    if guard.expired():
        return "hang", f"no outcome after {took:.1f} s", took
    if error is None:
        return OK, "", took
    if not isinstance(error, (AMQPError, TimeoutError, StopAsyncIteration, NoDelivery)):
        cell.problems.append(f"an untyped exception: {error!r}")
    return type(error).__name__, str(error)[:200], took


def alive(cell: Cell) -> bool:
    connection = cell.connection
    return bool(
        not connection.is_closed
        and connection.transport is not None
        and connection.connection.is_opened
    )


async def recover(cell: Cell, rnd: Round) -> None:
    """After the fault: the operation again, where the connection is (or comes) back."""
    loop = asyncio.get_running_loop()
    connection = cell.connection
    if cell.op == "connection-close":
        # closed for good: it stays closed (a robust one does not reconnect)
        if not await wait_until(lambda: connection.is_closed, WAIT):
            cell.problems.append("connection.close() did not leave the connection closed")
        await asyncio.sleep(0)
        if cell.robust and connection.reconnecting:
            cell.problems.append("the robust connection reconnects after close()")
        return
    if cell.robust:
        async with asyncio.timeout(WAIT):
            if cell.op == "channel-close":
                await wait_until(lambda: alive(cell) and not connection.reconnecting, WAIT)
            else:
                await cell.channel.ready()
        back = loop.time() if cell.reconnected_at is None else cell.reconnected_at
        cell.recovery_seconds = max(0.0, back - rnd.fault_end)
    elif not alive(cell):
        cell.after = "n/a"  # a plain connection that was lost stays lost
        return
    low_level = connection.connection
    if low_level not in cell.low_levels:
        cell.low_levels.append(low_level)
    async with asyncio.timeout(WAIT):
        if cell.op == "channel-close" or (not cell.robust and cell.channel.is_closed):
            await open_channel(cell)
        if cell.op == "consume-iterator" and cell.outcome != OK:
            # that iterator ended (a timeout closes it): a new one
            cell.iterator = await cell.stack.enter_async_context(cell.queue.iterator(timeout=T))
        if cell.op in ("consume-callback", "consume-iterator", "get"):
            # a consumer started under the fault may take it: any callback counts
            cell.got = loop.create_future()
            assert rnd.side is not None
            await rnd.side.publish(cell.queue_name)
    cell.after, cell.after_error, cell.after_seconds = await timed(cell, rnd, during=False)
    if cell.after != OK:
        cell.problems.append(f"afterwards: {cell.after} ({cell.after_error})")
    elif cell.after_seconds > bound(cell.op) + MARGIN:
        cell.problems.append(f"afterwards: took {cell.after_seconds:.2f} s")


def numbers_of_closed_channels(cell: Cell) -> list[int]:
    return [
        number
        for low_level in cell.low_levels
        if low_level.is_opened
        for number, channel in low_level.channels.items()
        if channel.is_closed
    ]


async def check_channel_numbers(cell: Cell) -> None:
    """No closed channel keeps its number (for long) on a connection still open."""
    if not await wait_until(lambda: not numbers_of_closed_channels(cell), WAIT):
        cell.problems.append(
            f"closed channels keep numbers {numbers_of_closed_channels(cell)} for {WAIT} s"
        )


async def close_cell(cell: Cell) -> None:
    for task in cell.background:
        try:
            async with asyncio.timeout(WAIT):
                await task
        except Exception as error:
            cell.problems.append(f"the harness could not publish from outside: {error!r}")
    try:
        async with asyncio.timeout(WAIT):
            await cell.stack.aclose()  # the iterator's ``async with`` ends
    except Exception as error:
        cell.problems.append(f"leaving the iterator's async with: {error!r}")
    if cell.connection is not None:
        try:
            async with asyncio.timeout(WAIT):
                await cell.connection.close()
        except Exception as error:
            cell.problems.append(f"closing the connection: {error!r}")
    for low_level in cell.low_levels:
        if not low_level.is_closed:
            cell.problems.append(f"{low_level!r} is open after close()")
        if low_level.channels:
            cell.problems.append(f"channels {sorted(low_level.channels)} taken after close()")
    if cell.proxy is not None:
        await cell.proxy.close()


async def cell_main(cell: Cell, rnd: Round) -> None:
    stage = "setup"
    try:
        async with asyncio.timeout(WAIT):
            await setup(cell, rnd)
        rnd.ready.arrive(cell)
        await rnd.hit.wait()
        stage = "meeting the fault"
        async with asyncio.timeout(WAIT):
            await noticed(cell)
        hit_cell(cell)
        cell.outcome, cell.error, cell.seconds = await timed(cell, rnd, during=True)
        rnd.ops_done.arrive(cell)
        await rnd.over.wait()
        stage = "afterwards"
        await recover(cell, rnd)
        stage = "channel numbers"
        await check_channel_numbers(cell)
    except Exception as error:
        cell.problems.append(f"{stage} failed: {error!r}")
    finally:
        rnd.ready.arrive(cell)
        rnd.ops_done.arrive(cell)
        await close_cell(cell)


# ---------------------------------------------------------------- the round


async def hit_round(rnd: Round) -> None:
    node = rnd.node
    if rnd.fault == "broker-close":
        # one rabbitmqctl for all the cells: their vhost is the module's own
        await asyncio.to_thread(
            rabbitmqctl, "close_all_connections", "--vhost", rnd.vhost, "fault matrix"
        )
    elif rnd.fault == "memory-alarm":
        assert node is not None
        await asyncio.to_thread(node.set_memory_alarm, True)
    elif rnd.fault == "restart":
        assert node is not None
        await asyncio.to_thread(node.stop)
    elif rnd.fault == "kill":
        assert node is not None
        await asyncio.to_thread(node.kill)


async def lift_round(rnd: Round) -> None:
    node = rnd.node
    for cell in rnd.cells.values():
        if cell.proxy is not None:
            cell.proxy.resume()
            cell.proxy.slow(0)
    if rnd.fault == "memory-alarm":
        assert node is not None
        await asyncio.to_thread(node.set_memory_alarm, False)
    elif rnd.fault in ("restart", "kill"):
        assert node is not None
        await asyncio.to_thread(node.start)


def listed_names(rnd: Round) -> set[str]:
    """The names of the connections the broker lists."""
    if rnd.node is not None:
        listing = rnd.node.rabbitmqctl("list_connections", "client_properties", "-q")
    else:
        listing = rabbitmqctl("list_connections", "client_properties", "-q")
    return set(re.findall(r'\{"connection_name","([^"]*)"\}', listing))


def blame_loop_exceptions(rnd: Round) -> None:
    """What reached the loop's exception handler, on the cell whose connection
    failed with that exception where it can be told."""
    errors: dict[int, Cell] = {}
    for cell in rnd.cells.values():
        for low_level in cell.low_levels:
            closing = low_level._closing
            if closing.done() and not closing.cancelled() and closing.exception() is not None:
                errors[id(closing.exception())] = cell
    for context in rnd.loop_exceptions:
        text = f"{context.get('message')}: {context.get('exception')!r}"
        cell = errors.get(id(context.get("exception")))
        if cell is not None:
            cell.problems.append(f"the loop reported: {text}")
        rnd.loop_exception_texts.append(text if cell is None else f"{cell.name}: {text}")


async def run_round(rnd: Round) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    for op in OPS:
        for kind in KINDS:
            name = f"fm-{rnd.fault}-{op}-{kind}-{rnd.loop}-{uuid.uuid4().hex[:6]}"
            rnd.cells[(op, kind)] = Cell(rnd.fault, op, kind, rnd.loop, name)
    cells = list(rnd.cells.values())

    # every task made from now on is marked with the cell it works for
    owners: weakref.WeakKeyDictionary[asyncio.Task[Any], str] = weakref.WeakKeyDictionary()

    def task_factory(
        loop: asyncio.AbstractEventLoop, coro: Any, context: contextvars.Context | None = None
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, context=context)
        owner = context.get(CELL) if context is not None else CELL.get()
        if owner is not None:
            owners[task] = owner
        return task

    def on_loop_exception(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        rnd.loop_exceptions.append(context)

    before = asyncio.all_tasks()
    previous_factory = loop.get_task_factory()
    previous_handler = loop.get_exception_handler()
    close_timeout = CoreChannel.CHANNEL_CLOSE_TIMEOUT
    loop.set_task_factory(task_factory)  # type: ignore[arg-type]
    loop.set_exception_handler(on_loop_exception)
    CoreChannel.CHANNEL_CLOSE_TIMEOUT = T  # channel.close() takes no timeout: this is its knob
    rnd.side = Side(rnd.url)
    tasks: list[asyncio.Task[None]] = []
    try:
        for cell in cells:
            context = contextvars.copy_context()
            context.run(CELL.set, cell.name)
            tasks.append(loop.create_task(cell_main(cell, rnd), context=context))
        await rnd.ready.wait(len(cells), 2 * WAIT)
        if rnd.fault in EVENT_FAULTS:
            rnd.hit.set()  # the cells watch for it while it happens
        await hit_round(rnd)
        rnd.fault_end = loop.time()
        rnd.hit.set()
        await rnd.ops_done.wait(len(cells), 2 * T + HANG + 2 * WAIT)
        await lift_round(rnd)
        if rnd.fault not in ("cut", "broker-close"):
            rnd.fault_end = loop.time()
        rnd.over.set()
        _done, pending = await asyncio.wait(tasks, timeout=4 * WAIT)
        for task in pending:
            rnd.problems.append(f"a cell did not finish: {task!r}")
        await rnd.side.close()

        # no task of a cell is left once it closed its connection
        def left() -> list[asyncio.Task[Any]]:
            current = asyncio.current_task()
            return [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]

        if not await wait_until(lambda: not left(), 5.0):
            for task in left():
                owner = owners.get(task)
                where = next((c for c in cells if c.name == owner), None)
                text = f"a task is left running: {task!r}"
                (where.problems if where is not None else rnd.problems).append(text)

        # and the broker has none of its connections
        names = {cell.name for cell in cells}
        remaining: set[str] = set()

        def gone() -> bool:
            return not remaining

        loop_deadline = loop.time() + WAIT
        while True:
            remaining = names & await asyncio.to_thread(listed_names, rnd)
            if gone() or loop.time() > loop_deadline:
                break
            await asyncio.sleep(0.5)
        for cell in cells:
            if cell.name in remaining:
                cell.problems.append(f"the broker still lists connection {cell.name}")
        gc.collect()
        await asyncio.sleep(0)
        blame_loop_exceptions(rnd)
    finally:
        # a round that failed half-way lets its cells go on and close
        rnd.hit.set()
        rnd.over.set()
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=2 * WAIT)
            for task in pending:
                task.cancel()
        loop.set_task_factory(previous_factory)
        loop.set_exception_handler(previous_handler)
        CoreChannel.CHANNEL_CLOSE_TIMEOUT = close_timeout
        rnd.seconds = loop.time() - started


async def the_round(fault: str, url: str, node: RabbitNode | None = None, vhost: str = "") -> Round:
    """The round of this fault on the running loop: run by the first of its tests."""
    key = (fault, loop_name())
    rnd = _ROUNDS.get(key)
    if rnd is None:
        rnd = _ROUNDS[key] = Round(fault, key[1], url, node=node, vhost=vhost)
        try:
            await run_round(rnd)
        except Exception as error:
            rnd.problems.append(f"the round failed: {error!r}")
    return rnd


def check(rnd: Round, op: str, kind: str) -> None:
    cell = rnd.cells.get((op, kind))
    if cell is None:
        pytest.fail("\n".join(rnd.problems) or "the round made no such cell")
    problems = [*rnd.problems, *cell.problems]
    expected = EXPECTED[(cell.fault, op, kind)]
    if cell.outcome != expected:
        problems.append(f"outcome {cell.outcome} ({cell.error!r}), expected {expected}")
    if cell.seconds is not None and cell.seconds > bound(op) + MARGIN:
        problems.append(f"took {cell.seconds:.2f} s, bound {bound(op)} s + {MARGIN} s")
    assert not problems, f"{cell.name}:\n  " + "\n  ".join(problems)


# ---------------------------------------------------------------- fixtures and tests


@pytest.fixture(scope="module")
def matrix_vhost() -> Iterator[tuple[str, str]]:
    """A vhost of this module's own (a broker-side close closes all its connections)."""
    vhost = f"amqpfast-fm-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield vhost, f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/{quote(vhost, safe='')}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module", autouse=True)
def matrix_summary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end: the matrix as JSON and Markdown, written and printed."""
    yield
    if not _ROUNDS:
        return
    records = [cell.record() for rnd in _ROUNDS.values() for cell in rnd.cells.values()]
    rounds = {
        f"{fault}/{loop}": {
            "seconds": round(rnd.seconds, 1),
            "problems": rnd.problems,
            "loop_exceptions": rnd.loop_exception_texts,
        }
        for (fault, loop), rnd in _ROUNDS.items()
    }
    data = {
        "timeout": T,
        "margin": MARGIN,
        "reconnect_interval": RECONNECT_INTERVAL,
        "rounds": rounds,
        "cells": records,
    }
    table = markdown(records)
    outputs = [tmp_path_factory.getbasetemp() / "fault_matrix.json"]
    if os.environ.get("AMQPFAST_FAULT_MATRIX_OUT"):
        outputs.append(Path(os.environ["AMQPFAST_FAULT_MATRIX_OUT"]))
    for path in outputs:
        path.write_text(json.dumps(data, indent=2))
        path.with_suffix(".md").write_text(table)
    print(f"\nfault matrix: {outputs[0]} ({len(records)} cells)\n{table}")
    print(json.dumps(rounds, indent=2))


def markdown(records: list[dict[str, Any]]) -> str:
    """fault x operation -> outcome and seconds, plain and robust (asyncio / uvloop)."""
    by_key: dict[tuple[str, str, bool], dict[str, dict[str, Any]]] = {}
    for record in records:
        key = (record["fault"], record["operation"], record["robust"])
        by_key.setdefault(key, {})[record["loop"]] = record

    def shown(cells: dict[str, dict[str, Any]], outcome: str, seconds: str) -> str:
        loops = [cells[loop] for loop in ("asyncio", "uvloop") if loop in cells]
        texts = [
            f"{cell[outcome]} {cell[seconds]:.2f}" if cell[seconds] is not None else cell[outcome]
            for cell in loops
        ]
        outcomes = {cell[outcome] for cell in loops}
        if len(outcomes) == 1 and all(cell[seconds] is not None for cell in loops):
            times = " / ".join(f"{cell[seconds]:.2f}" for cell in loops)
            text = f"{loops[0][outcome]} {times}"
        else:
            text = " / ".join(texts)
        if any(cell["problems"] or cell["outcome"] != cell["expected"] for cell in loops):
            text += " **FAIL**"
        return text

    lines = [
        "| fault | operation | plain | plain, afterwards | robust | robust, after recovery |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for fault in (*SHARED_FAULTS, *NODE_FAULTS):
        for op in OPS:
            plain = by_key.get((fault, op, False))
            robust = by_key.get((fault, op, True))
            if plain is None or robust is None:
                continue
            recovery = [
                f"{cell['recovery_seconds']:.2f}"
                for cell in robust.values()
                if cell["recovery_seconds"] is not None
            ]
            back = f" (back after {' / '.join(recovery)})" if recovery else ""
            lines.append(
                f"| {fault} | {op} | {shown(plain, 'outcome', 'seconds')} "
                f"| {shown(plain, 'after', 'after_seconds')} "
                f"| {shown(robust, 'outcome', 'seconds')} "
                f"| {shown(robust, 'after', 'after_seconds')}{back} |"
            )
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fault", SHARED_FAULTS)
async def test_shared_broker_faults(
    matrix_vhost: tuple[str, str], fault: str, op: str, kind: str
) -> None:
    vhost, url = matrix_vhost
    check(await the_round(fault, url, vhost=vhost), op, kind)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS)
async def test_memory_alarm(amqp_private_broker: RabbitNode, op: str, kind: str) -> None:
    node = amqp_private_broker
    check(await the_round("memory-alarm", node.url, node=node), op, kind)


@pytest.mark.asyncio(loop_factories=["asyncio"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("fault", BOOT_FAULTS)
async def test_node_restart_and_kill(
    amqp_private_broker: RabbitNode, fault: str, op: str, kind: str
) -> None:
    node = amqp_private_broker
    check(await the_round(fault, node.url, node=node), op, kind)
