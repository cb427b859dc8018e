"""Node's amqplib beside amqpfast's aio-pika API: client CPU per message, one run.

The scenarios of api_runners.py — ``publish`` (no confirms),
``publish+confirm`` (windows of 500 awaited together), ``batch+confirm``
(amqpfast's ``publish_many``; amqplib has no other form than its
``publish+confirm``, a promise per message under ``Promise.all``, which it
runs again) and ``consume+ack`` (prefetch 1000) — for amqplib
(benchmarks/node/amqplib_bench.js, installed from the npm registry into
benchmarks/node/node_modules on first use) and for amqpfast on uvloop,
against RabbitMQ and against the fake broker, a few rounds each (median by
CPU). Node's CPU is its whole process over the
measured phase (``process.cpuUsage``), as getrusage is amqpfast's.

    .venv/bin/python benchmarks/amqplib_runner.py [-k fake]

Needs ``node`` and ``npm`` on PATH. See the "Node amqplib" section of CLIENTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

from api_runners import ApiRounds
from client_runners import QUEUE_ARGUMENTS, Settings, fake_broker
from fake_broker import SINK_QUEUE, delivery_queue

import amqpfast

NODE_DIR = Path(__file__).resolve().parent / "node"
SCENARIOS = ("publish", "publish+confirm", "batch+confirm", "consume+ack")
# what amqplib runs for each (its confirms have one form)
AMQPLIB_SCENARIO = {"batch+confirm": "publish+confirm"}
TARGET = 3  # amqplib's CPU per message / amqpfast's, at least
LOOP = "uvloop"


def install_amqplib() -> None:
    """``npm install`` into benchmarks/node, once."""
    if (NODE_DIR / "node_modules" / "amqplib").is_dir():
        return
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"amqplib_runner.py: {tool} is not installed")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True)


async def _fill(url: str, queue: str, body: bytes, count: int) -> None:
    """Declare ``queue`` and put ``count`` messages in it (confirmed), for a consume round."""
    async with await amqpfast.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, arguments=QUEUE_ARGUMENTS)
        for start in range(0, count, 1000):
            await asyncio.gather(
                *[
                    channel.default_exchange.publish(amqpfast.Message(body), queue)
                    for _ in range(min(1000, count - start))
                ]
            )


async def _declare(url: str, queue: str, delete: bool = False) -> None:
    async with await amqpfast.connect(url) as connection:
        channel = await connection.channel()
        if delete:
            await channel.queue_delete(queue)
        else:
            await channel.declare_queue(queue, arguments=QUEUE_ARGUMENTS)


def amqplib_round(scenario: str, url: str, fake: bool, settings: Settings) -> float:
    """One amqplib round: its CPU µs per message."""
    count = settings.messages
    scenario = AMQPLIB_SCENARIO.get(scenario, scenario)
    if fake:
        queue = delivery_queue(count) if scenario == "consume+ack" else SINK_QUEUE
    else:
        queue = f"amqpfast-bench-amqplib-{uuid.uuid4().hex[:8]}"
        if scenario == "consume+ack":
            asyncio.run(_fill(url, queue, settings.body, count))
        else:
            asyncio.run(_declare(url, queue))
    try:
        run = subprocess.run(
            ["node", "amqplib_bench.js", url, scenario, str(count), queue],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    finally:
        if not fake:
            asyncio.run(_declare(url, queue, delete=True))
    result = json.loads(run.stdout.strip().splitlines()[-1])
    return float(result["cpu_us_per_msg"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", dest="match", default="", help="rows whose name contains it")
    options = parser.parse_args(argv)
    install_amqplib()
    settings = Settings()
    rows: list[tuple[str, float, float]] = []
    with fake_broker(settings) as broker:
        for fake in (False, True):
            for scenario in SCENARIOS:
                name = f"fake {scenario}" if fake else scenario
                if options.match not in name:
                    continue
                url = broker.url if fake else settings.url
                ours = ApiRounds(name, "amqpfast", LOOP, settings, url).run(settings.rounds)
                theirs = statistics.median(
                    amqplib_round(scenario, url, fake, settings) for _ in range(settings.rounds)
                )
                rows.append((name, ours.cpu_us, theirs))
                print(f"{name:<22} amqpfast {ours.cpu_us:6.2f}  amqplib {theirs:6.2f}", flush=True)
    print()
    print(
        "| scenario | amqpfast (uvloop) µs/msg | amqplib µs/msg | amqplib / amqpfast "
        f"| target >={TARGET}x |"
    )
    print("|---|---|---|---|---|")
    for name, ours_us, theirs_us in rows:
        ratio = theirs_us / ours_us
        verdict = "met" if ratio >= TARGET else "MISSED"
        print(f"| {name} | {ours_us:.2f} | {theirs_us:.2f} | {ratio:.1f}x | {verdict} |")
    print(
        f"\n{settings.messages} messages of {settings.body_size} B per round, median of "
        f"{settings.rounds} rounds by CPU; amqplib {amqplib_version()}, Node {node_version()}; "
        f"Python {sys.version.split()[0]}"
    )
    return 0


def amqplib_version() -> str:
    package = NODE_DIR / "node_modules" / "amqplib" / "package.json"
    return str(json.loads(package.read_text())["version"])


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
