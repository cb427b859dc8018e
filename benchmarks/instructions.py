"""The performance guard: CPU instructions per message, counted, not timed.

Wall-clock and CPU-time benchmarks swing by ±20 % on a shared machine; the
number of instructions the client executes per message does not. One
process under ``valgrind --tool=callgrind`` imports amqpfast, then runs each
scenario in a forked child of its own (callgrind counts each process apart),
with ``LARGE`` messages: the first ``SMALL`` of them warm
it up (while Python specialises its bytecode) and are not counted, nor are the
start-up, the connect and the close. The workload marks where counting starts
and stops by calling getpgrp() and getsid(), which nothing else in the
process calls: callgrind zeroes its counts on entering the one and dumps them
on entering the other. The count divided by ``LARGE - SMALL`` is the cost of
one message.

The scenarios use the compiled codec. Those marked "fake" talk to the fake
broker of fake_broker.py (a process of its own, not counted, that answers at
once); "rpc" needs the real broker (``AMQP_URL``, default the local one).

    python benchmarks/instructions.py            # count, print, compare with the record
    python benchmarks/instructions.py --check    # the same; exit 1 when one is > 10 % over
    python benchmarks/instructions.py --record   # write the counts as the new record
    python benchmarks/instructions.py --loop uvloop   # the same on uvloop (printed only)
    python benchmarks/instructions.py -k "api publish" --keep DIR
        # keeps callgrind's files: ``callgrind_annotate --threshold=100 DIR/callgrind.PID.1``
        # shows the window's instructions per function (the functions that
        # were running when counting started show odd self costs there; the
        # total is right)

The record (benchmarks/instructions.json) holds the counts of one
interpreter (its version is in the record) on asyncio's own loop: counts
from another interpreter or on uvloop are not comparable and are only
printed. Updating the record is a deliberate, reviewed change (a commit of
the JSON file with the reason in its message).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RECORD = HERE / "instructions.json"
TOLERANCE = 0.10  # a scenario may cost this much more than recorded
SMALL, LARGE = 1_000, 5_000  # messages warming up, messages in all
RPC_SMALL, RPC_LARGE = 200, 1_000  # calls
BODY = b"x" * 64
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
WORKERS = 2  # scenarios counted at once (the counts do not depend on it)


# ------------------------------------------------------------ the workloads
# Each runs once in the measured process: ``run.large`` messages (or calls),
# counted after the first ``run.small``.


class Run:
    """How many messages a workload moves, and the marks callgrind counts between."""

    def __init__(self, small: int, large: int) -> None:
        self.small = small
        self.large = large

    @staticmethod
    def start_counting() -> None:
        os.getpgrp()  # callgrind --zero-before=getpgrp

    @staticmethod
    def stop_counting() -> None:
        os.getsid(0)  # callgrind --dump-before=getsid

    def phases(self) -> Iterator[int]:
        """For workloads that drive their own loop: the warm-up's messages, then
        the counted ones; counting runs while the caller moves the second batch."""
        yield self.small
        self.start_counting()
        yield self.large - self.small
        self.stop_counting()


async def _api_channel(url: str, confirms: bool) -> tuple[Any, Any]:
    import amqpfast

    connection = await amqpfast.connect(url)
    return connection, await connection.channel(publisher_confirms=confirms)


async def api_publish(url: str, run: Run) -> None:
    import amqpfast

    connection, channel = await _api_channel(url, False)
    exchange = channel.default_exchange
    for count in run.phases():
        for _ in range(count):
            await exchange.publish(amqpfast.Message(BODY), routing_key="fake.sink")
        await channel.set_qos(prefetch_count=0)  # a round trip: all of them have left
    await connection.close()


async def api_publish_confirm(url: str, run: Run) -> None:
    import amqpfast

    connection, channel = await _api_channel(url, True)
    exchange = channel.default_exchange
    for count in run.phases():
        for start in range(0, count, 500):
            window = min(500, count - start)
            await asyncio.gather(
                *[exchange.publish(amqpfast.Message(BODY), "fake.sink") for _ in range(window)]
            )
    await connection.close()


async def api_publish_many_confirm(url: str, run: Run) -> None:
    import amqpfast

    connection, channel = await _api_channel(url, True)
    exchange = channel.default_exchange
    for count in run.phases():
        for start in range(0, count, 500):
            window = min(500, count - start)
            await exchange.publish_many(
                [amqpfast.Message(BODY) for _ in range(window)], "fake.sink"
            )
    await connection.close()


async def _api_consume(url: str, run: Run, ack: bool) -> None:
    connection, channel = await _api_channel(url, False)
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.declare_queue(f"fake.deliver.{run.large}", passive=True)
    done = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_message(message: Any) -> None:
        nonlocal seen
        if ack:
            await message.ack()
        seen += 1
        if seen == run.small:
            run.start_counting()
        elif seen == run.large:
            run.stop_counting()
            done.set_result(None)

    await queue.consume(on_message, no_ack=not ack)
    await done
    await channel.set_qos(prefetch_count=10)  # a round trip: the acks have left
    await connection.close()


async def api_consume(url: str, run: Run) -> None:
    await _api_consume(url, run, ack=False)


async def api_consume_ack(url: str, run: Run) -> None:
    await _api_consume(url, run, ack=True)


async def api_iterator_process(url: str, run: Run) -> None:
    connection, channel = await _api_channel(url, False)
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.declare_queue(f"fake.deliver.{run.large}", passive=True)
    seen = 0
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                seen += 1
            if seen == run.small:
                run.start_counting()
            elif seen == run.large:
                run.stop_counting()
                break
    await connection.close()


async def core_publish(url: str, run: Run) -> None:
    from amqpfast.core import connect

    connection = await connect(url)
    channel = await connection.channel(publisher_confirms=False)
    for count in run.phases():
        for _ in range(count):
            await channel.basic_publish(BODY, routing_key="fake.sink")
        await channel.basic_qos(prefetch_count=0)
    await connection.close()


async def core_consume_ack(url: str, run: Run, asynchronous: bool = False) -> None:
    from amqpfast.core import connect

    connection = await connect(url)
    channel = await connection.channel(publisher_confirms=False)
    await channel.basic_qos(prefetch_count=1000)
    done = asyncio.get_running_loop().create_future()
    seen = 0

    def on_message(message: Any) -> None:
        nonlocal seen
        channel.basic_ack(message.delivery.delivery_tag)
        seen += 1
        if seen == run.small:
            run.start_counting()
        elif seen == run.large:
            run.stop_counting()
            done.set_result(None)

    async def on_message_async(message: Any) -> None:
        # as aiormq's examples write it: a coroutine that awaits the ack
        nonlocal seen
        await channel.basic_ack(message.delivery.delivery_tag)
        seen += 1
        if seen == run.small:
            run.start_counting()
        elif seen == run.large:
            run.stop_counting()
            done.set_result(None)

    callback = on_message_async if asynchronous else on_message
    await channel.basic_consume(f"fake.deliver.{run.large}", callback)
    await done
    await channel.basic_qos(prefetch_count=10)
    await connection.close()


async def core_consume_ack_async(url: str, run: Run) -> None:
    await core_consume_ack(url, run, asynchronous=True)


async def api_rpc(url: str, run: Run, direct_reply_to: bool = False) -> None:
    import amqpfast
    from amqpfast.patterns import RPC

    async with await amqpfast.connect(url) as connection:
        channel = await connection.channel()
        rpc = await RPC.create(channel, direct_reply_to=direct_reply_to)
        method = f"instructions.{uuid.uuid4().hex[:8]}"

        async def double(*, value: int) -> int:
            return value * 2

        await rpc.register(method, double, auto_delete=True)
        for count in run.phases():
            for number in range(count):
                assert await rpc.call(method, kwargs={"value": number}) == number * 2
        await rpc.close()


async def api_rpc_direct(url: str, run: Run) -> None:
    await api_rpc(url, run, direct_reply_to=True)


Workload = Callable[[str, Run], Coroutine[Any, Any, None]]
# name: (workload, needs the real broker)
SCENARIOS: dict[str, tuple[Workload, bool]] = {
    "api publish": (api_publish, False),
    "api publish+confirm": (api_publish_confirm, False),
    "api publish_many+confirm": (api_publish_many_confirm, False),
    "api consume": (api_consume, False),
    "api consume+ack": (api_consume_ack, False),
    "api iterator+process": (api_iterator_process, False),
    "api rpc call": (api_rpc, True),
    "api rpc call, direct reply-to": (api_rpc_direct, True),
    "core publish": (core_publish, False),
    "core consume+ack": (core_consume_ack, False),
    "core consume+ack, async callback": (core_consume_ack_async, False),
}


def _run_workloads(names: list[str], fake_url: str, real_url: str, loop: str) -> None:
    """In the process under valgrind: amqpfast is imported once (the import is
    most of a run's instructions), then each scenario runs in a forked child of
    its own, on ``loop``, ``WORKERS`` at a time. Each child's counts go to its
    own callgrind file; its pid and scenario are printed."""
    import amqpfast.core
    import amqpfast.patterns  # noqa: F401 (imported before the fork, for every child)

    run_loop: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if loop == "uvloop":
        import uvloop

        run_loop = uvloop.run

    waiting, failed = list(names), []
    running: dict[int, str] = {}  # pid -> scenario
    while waiting or running:
        while waiting and len(running) < WORKERS:
            name = waiting.pop(0)
            workload, real = SCENARIOS[name]
            pid = os.fork()
            if pid == 0:
                status = 0
                try:
                    run_loop(workload(real_url if real else fake_url, Run(*_runs(name))))
                except BaseException:
                    traceback.print_exc()
                    status = 1
                os._exit(status)
            running[pid] = name
            print(f"{pid} {name}", flush=True)
        pid, status = os.wait()
        if os.waitstatus_to_exitcode(status) != 0:
            failed.append(running[pid])
        del running[pid]
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


# ------------------------------------------------------------ counting


def _valgrind() -> str:
    found = shutil.which("valgrind")
    if found is None:
        raise SystemExit("instructions.py: valgrind is not installed (scripts/instructions.sh)")
    return found


def _runs(name: str) -> tuple[int, int]:
    _, real = SCENARIOS[name]
    return (RPC_SMALL, RPC_LARGE) if real else (SMALL, LARGE)


def _instructions(
    names: list[str], fake_url: str, real_url: str, loop: str, keep: Path | None = None
) -> dict[str, int]:
    """What each scenario executes for its counted messages (see ``Run``);
    callgrind's files are kept in ``keep`` when it is given."""
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    environment.pop("AMQPFAST_NO_EXTENSIONS", None)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with (
        contextlib.nullcontext(str(keep))
        if keep is not None
        else tempfile.TemporaryDirectory(prefix="amqpfast-instructions-")
    ) as directory:
        run = subprocess.run(
            [
                _valgrind(),
                "--tool=callgrind",
                f"--callgrind-out-file={directory}/callgrind.%p",
                "--zero-before=getpgrp",
                "--dump-before=getsid",
                sys.executable,
                __file__,
                *(f"--run={name}" for name in names),
                f"--url={fake_url}",
                f"--real-url={real_url}",
                f"--loop={loop}",
            ],
            capture_output=True,
            text=True,
            env=environment,
            # a workload that stops (a hang) fails; the longest takes ~10 s
            timeout=60 + 30 * len(names),
        )
        if run.returncode != 0:
            raise RuntimeError(f"the scenarios failed:\n{run.stdout}{run.stderr[-3000:]}")
        counts = {}
        for line in run.stdout.splitlines():
            pid, name = line.split(" ", 1)
            # One dump (.1) between the marks, then the final one at exit: a
            # second would mean something else called getsid().
            dumps = sorted(path.name for path in Path(directory).glob(f"callgrind.{pid}*"))
            if dumps != [f"callgrind.{pid}", f"callgrind.{pid}.1"]:
                raise RuntimeError(f"{name}: callgrind wrote {dumps}, expected one dump")
            dump = (Path(directory) / f"callgrind.{pid}.1").read_text()
            found = re.search(r"^summary: (\d+)$", dump, re.M)
            if found is None:
                raise RuntimeError(f"{name}: no summary in callgrind's dump")
            counts[name] = int(found.group(1))
            if keep is not None:
                print(f"  {name}: callgrind_annotate --threshold=100 {directory}/callgrind.{pid}.1")
        return counts


def interpreter() -> str:
    return f"{platform.python_implementation()} {platform.python_version()}"


def measure(names: list[str], loop: str = "asyncio", keep: Path | None = None) -> dict[str, int]:
    sys.path.insert(0, str(HERE))
    from fake_broker import FakeBroker

    with FakeBroker(BODY) as fake:
        real_url = os.environ.get("AMQP_URL", DEFAULT_URL)
        executed = _instructions(names, fake.url, real_url, loop, keep)
    counts = {}
    for name in names:
        small, large = _runs(name)
        counts[name] = round(executed[name] / (large - small))
        print(f"  {name:24} {counts[name]:>9,} instructions per message", flush=True)
    return counts


def compare(counts: dict[str, int], record: dict[str, Any]) -> list[str]:
    """The scenarios that cost more than the record allows."""
    over = []
    for name, count in counts.items():
        recorded = record["instructions"].get(name)
        if recorded is None:
            print(f"  {name}: not in the record")
            continue
        change = count / recorded - 1
        verdict = "OVER" if change > TOLERANCE else "ok"
        print(f"  {name:24} {recorded:>9,} -> {count:>9,}  {change:+6.1%}  {verdict}")
        if change > TOLERANCE:
            over.append(name)
    return over


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when over the record")
    parser.add_argument("--record", action="store_true", help="write the counts as the record")
    parser.add_argument("-k", dest="match", default="", help="scenarios whose name contains it")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep callgrind's files in DIR, to see where the instructions go",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the event loop (the record is of asyncio's; uvloop's counts are only printed)",
    )
    parser.add_argument("--run", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--real-url", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.loop != "asyncio" and (options.record or options.check):
        parser.error("the record is of asyncio's loop: --record and --check count on it")
    if options.run:
        _run_workloads(options.run, options.url, options.real_url, options.loop)
        return 0

    from amqpfast.codec import IMPLEMENTATION

    if IMPLEMENTATION != "c":
        raise SystemExit("instructions.py: the compiled codec is not built")
    names = [name for name in SCENARIOS if options.match in name]
    print(f"instructions per message, {interpreter()}, compiled codec, {options.loop}:")
    counts = measure(names, options.loop, options.keep)
    if options.loop != "asyncio":
        return 0  # the record is of asyncio's loop
    record = json.loads(RECORD.read_text()) if RECORD.exists() else None
    if options.record:
        kept = record["instructions"] if record and record["interpreter"] == interpreter() else {}
        RECORD.write_text(
            json.dumps({"interpreter": interpreter(), "instructions": {**kept, **counts}}, indent=2)
            + "\n"
        )
        print(f"recorded in {RECORD.relative_to(HERE.parent)}")
        return 0
    if record is None:
        print("no record to compare with (--record writes one)")
        return 0
    if record["interpreter"] != interpreter():
        print(f"the record is of {record['interpreter']}: counts of another interpreter differ")
        return 0
    print(f"against the record (more than {TOLERANCE:.0%} over fails):")
    over = compare(counts, record)
    if over and options.check:
        print(f"costs more than recorded: {', '.join(over)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
