"""What waiting for the broker costs: the CPU of one wakeup, and how often it comes.

Against RabbitMQ the broker sets the pace: the client reads what has come,
handles it, and sleeps until more comes. Each of those wakeups costs the
kernel's context switches and the loop's poll, read and write, whatever the
client does with the bytes. The faster the client, the fewer messages each
read brings, so the more wakeups per message it pays.

:func:`bare_wakeup_cpu` measures one wakeup with nothing else in it: an
asyncio Protocol that answers each byte another process echoes back, on the
loop under test; what this process spends per round trip is the floor of one
read. :func:`wakeup_table` puts it beside a run's RabbitMQ scenarios: their wakeups
per message (voluntary context switches, from getrusage), what those would
cost at the floor, and the most any client could be cheaper than the other
library while it is woken that often.

``.venv/bin/python benchmarks/wakeups.py`` prints the floor on each loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import sys
from collections.abc import Iterable

from client_runners import LOOPS, Meter, Results, rows

TRIPS = 10_000  # round trips measured, in each of
TIMES = 3  # measurements (the median is the floor)
WARM = 1_000  # round trips before each
WAITS = 0.005  # wakeups per message below which a scenario counts as never waiting


class _Bouncer(asyncio.Protocol):
    """Sends a byte back for each one received until ``left`` are in, then sets ``done``."""

    def __init__(self) -> None:
        self.left = 0
        self.done: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.left -= 1
        if self.left <= 0:
            assert self.done is not None
            self.done.set_result(None)
        else:
            assert self.transport is not None
            self.transport.write(b"x")


def bare_wakeup_cpu(loop: str, trips: int = TRIPS) -> float:
    """CPU µs this process spends per wakeup on ``loop`` with nothing to do but answer."""
    ours, theirs = socket.socketpair()
    child = os.fork()
    if child == 0:  # the echo: blocking, in a process of its own (not measured)
        ours.close()
        try:
            while data := theirs.recv(64):
                theirs.sendall(data)
        finally:
            os._exit(0)
    theirs.close()
    try:
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            return runner.run(_measure(ours, trips))
    finally:
        ours.close()
        os.waitpid(child, 0)


async def _measure(sock: socket.socket, trips: int) -> float:
    # one connection: a warm-up, then the measured round trips on the same socket
    loop = asyncio.get_running_loop()
    protocol = _Bouncer()
    transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
    for count in (WARM, trips):
        protocol.left, protocol.done = count, loop.create_future()
        meter = Meter()
        transport.write(b"x")
        await protocol.done
    transport.close()
    return meter.stop(trips).cpu_us


def floors(loops: Iterable[str]) -> dict[str, float]:
    """The floor on each loop: the median of a few measurements."""
    return {loop: statistics.median(bare_wakeup_cpu(loop) for _ in range(TIMES)) for loop in loops}


def wakeup_table(
    results: Results,
    scenarios: Iterable[str],
    floor: dict[str, float],
    ours: str,
    other: str,
) -> list[str]:
    """The RabbitMQ scenarios' wakeups, priced at the floor, beside their fake-broker twins.

    ``scenarios``: the RabbitMQ ones; each one's twin against the fake broker
    (named ``fake <scenario>``, never waiting) gives the client's own work per
    message. That work plus the wakeups at the floor is about what the
    scenario costs against RabbitMQ; ``other``'s CPU over it is about the
    best ratio the client can show there, and over the wakeups alone, the
    most any client could (its own work free).
    """
    names = list(scenarios)
    lines = [
        "Waiting for RabbitMQ: the process slept and was woken (voluntary context switches from",
        "getrusage) this often per message; one bare wakeup costs "
        + ", ".join(f"{cost:.1f} µs on {loop}" for loop, cost in floor.items())
        + " of CPU here (an asyncio",
        f"Protocol echoing a byte with another process). {ours}'s own work per message is its "
        "cost against the fake broker:",
        f"{'':<22} {'':<7} | {ours + ' µs/msg':^47} | {other + '/' + ours:^27}",
        f"{'scenario':<22} {'loop':<7} | {'wakeups/msg':>11} {'at floor':>8} {'+ work':>7}"
        f" {'= about':>8} {'measured':>8} | {'measured':>8} {'about':>7} {'at most':>8}",
    ]
    for scenario, loop in rows(results, names):
        fast, slow = results.get((scenario, loop, ours)), results.get((scenario, loop, other))
        work = results.get((f"fake {scenario}", loop, ours))
        if scenario not in names or fast is None or slow is None or work is None:
            continue
        if loop not in floor or not fast.messages:
            continue
        wakeups = fast.wakeups / fast.messages
        waiting = wakeups * floor[loop]
        about = waiting + work.cpu_us
        # a scenario that hardly waits (publish) has no such bound
        ceiling = f"{slow.cpu_us / waiting:>7.0f}x" if wakeups >= WAITS else f"{'-':>8}"
        lines.append(
            f"{scenario:<22} {loop:<7} | {wakeups:>11.3f} {waiting:>8.2f} {work.cpu_us:>7.2f}"
            f" {about:>8.2f} {fast.cpu_us:>8.2f} | {slow.cpu_us / fast.cpu_us:>7.1f}x"
            f" {slow.cpu_us / about:>6.1f}x {ceiling}"
        )
    return lines


def main() -> int:
    for loop, cost in floors(LOOPS).items():
        print(f"a bare wakeup on {loop}: {cost:.1f} µs of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
