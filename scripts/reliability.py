"""Run the robust-connection soak tests and write RELIABILITY.md with their figures.

Usage (from anywhere; the broker must be up, as for the test suite)::

    .venv/bin/python scripts/reliability.py [--out RELIABILITY.md] [pytest options ...]

It runs ``tests/test_robust_soak.py`` with ``AMQPFAST_RELIABILITY_OUT`` set,
so each test writes its measurements into a JSON file, and turns them into a
Markdown report at the repository root. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = "tests/test_robust_soak.py"


def run(command: list[str], **kwargs: Any) -> str:
    """A command's output, or "?" when it cannot run (the report must still be written)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, **kwargs)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return done.stdout.strip() or "?"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def outcomes(junit: Path) -> list[dict[str, Any]]:
    """Each test's name, outcome and duration from pytest's JUnit XML."""
    tests = []
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        detail = ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "FAILED" if child.tag == "failure" else "ERROR"
                detail = (child.get("message") or "").splitlines()[0][:200]
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfail (known bug)" if "xfail" in kind else "skipped"
                detail = child.get("message") or ""
        tests.append(
            {
                "name": case.get("name", "?"),
                "outcome": outcome,
                "seconds": float(case.get("time", 0)),
                "detail": detail,
            }
        )
    return tests


def report(
    figures: dict[str, Any], tests: list[dict[str, Any]], command: str, took: float, status: int
) -> str:
    publish = figures.get("publish", {})
    consumers = figures.get("consumers", {})
    topology = figures.get("topology", {})
    stall = figures.get("stall", {})
    rounds = figures.get("rounds", {})
    # the awkward closes in the order the tests ran
    closes = {
        moment: figures.get(f"close:{moment}", {})
        for test in tests
        if test["name"].startswith("test_close_at_an_awkward_moment[")
        for moment in [test["name"].split("[", 1)[1].rstrip("]")]
    }
    recoveries = [
        value
        for section in (publish, consumers, topology)
        for value in section.get("recovery_seconds", [])
    ]
    detections = stall.get("detection_seconds", [])
    kills = publish.get("kills", 0) + consumers.get("kill_cycles", 0) + topology.get("kills", 0)
    commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT)
    dirty = run(["git", "status", "--porcelain", "amqpfast"], cwd=ROOT)
    broker = run(["rabbitmqctl", "version"])
    failed = [test for test in tests if test["outcome"] in ("FAILED", "ERROR")]
    known = [test for test in tests if test["outcome"].startswith("xfail")]

    lines = [
        "# Reliability of connect_robust",
        "",
        "Measured by the soak tests in `tests/test_robust_soak.py` against a real RabbitMQ;",
        "written by `scripts/reliability.py`. Do not edit by hand: run it again.",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; "
        f"run time {took:.0f} s; pytest exit status {status}",
        f"- amqpfast at commit {commit}"
        + (" (with uncommitted changes in amqpfast/)" if dirty not in ("", "?") else ""),
        f"- Python {platform.python_version()} on {platform.system()} "
        f"({os.cpu_count()} CPUs), RabbitMQ {broker}",
        "",
        "## Summary",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| connection kills survived (rabbitmqctl close_connection) | {kills} |",
        f"| stalls (silent peer) detected and recovered | {len(detections)} |",
        f"| confirmed messages published through {publish.get('kills', 0)} kills "
        f"| {publish.get('messages', 'n/a')} |",
        f"| messages lost | {publish.get('lost', 'n/a')} |",
        f"| duplicates (published again after an unconfirmed publish) "
        f"| {publish.get('duplicates', 'n/a')} |",
        f"| recovery time after a kill, p50 / p95 / max ({len(recoveries)} kills) | "
        + (
            f"{seconds(statistics.median(recoveries))} / {seconds(percentile(recoveries, 0.95))}"
            f" / {seconds(max(recoveries))}"
            if recoveries
            else "n/a"
        )
        + " |",
        f"| stall detection time, heartbeat {stall.get('heartbeat', '?')} s, max "
        f"(bound 2 x heartbeat + 1 s) | "
        + (seconds(max(detections)) if detections else "n/a")
        + " |",
        "| recovery after a detected stall, p50 | "
        + (
            seconds(statistics.median(stall["recovery_after_detection_seconds"]))
            if stall.get("recovery_after_detection_seconds")
            else "n/a"
        )
        + " |",
        f"| connect / use / close rounds: tasks, broker connections, objects left "
        f"| {rounds.get('tasks_left', 'n/a')}, {rounds.get('connections_left_on_broker', 'n/a')}"
        f", {rounds.get('connection_objects_alive', 'n/a')} "
        f"(after {rounds.get('rounds', '?')} rounds) |",
        f"| memory growth over those rounds (tracemalloc, after a warm-up) "
        f"| {rounds.get('traced_growth_bytes', 'n/a')} bytes |",
        "",
        "Recovery time: from the moment the client sees the connection lost to the",
        "call of `reconnect_callbacks` (channels, topology and consumers restored),",
        "with `reconnect_interval=0.1`.",
        "",
        "## Tests",
        "",
        "| test | outcome | seconds |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{test['name']}` | {test['outcome']} | {test['seconds']:.1f} |" for test in tests]
    if failed:
        lines += ["", "### Failures", ""]
        lines += [f"- `{test['name']}`: {test['detail']}" for test in failed]
    if known:
        lines += ["", "### Known bugs (strict xfail: the test passes once the bug is fixed)", ""]
        lines += [f"- `{test['name']}`: {test['detail']}" for test in known]

    lines += ["", "## Details", "", "### Confirmed publishing through kills", ""]
    lines += [
        f"- {publish.get('messages', '?')} messages of {publish.get('body_bytes', '?')} B, "
        f"each with its own message_id, paced, by 50 concurrent publishers; "
        f"{publish.get('publish_attempts', '?')} publish attempts",
        f"- errors the publishers caught and published again after: "
        f"{publish.get('publish_errors', {})}",
        f"- in the queue afterwards: {publish.get('in_queue', '?')}; lost "
        f"{publish.get('lost', '?')}; duplicates {publish.get('duplicates', '?')}",
        f"- kills {publish.get('kills', '?')}, reconnects {publish.get('reconnects', '?')}, "
        f"{publish.get('publish_seconds', '?')} s of publishing",
        "",
        "### Consumers through kills",
        "",
        f"- {consumers.get('kill_cycles', '?')} kill cycles; queues {consumers.get('queues', '?')};"
        " after each: exactly one consumer (same tag) per queue in `rabbitmqctl list_consumers`,"
        " consumer count 1 in `list_queues` for the classic queues, a new name for the"
        " server-named one, and one message per queue delivered exactly once",
        f"- the quorum queue's consumer count in `list_queues` is a metric the queue updates"
        f" every few seconds: it still showed 0 in {consumers.get('quorum_count_lagging_cycles')}"
        " of the cycles, and 1 once settled",
        "",
        "### Topology through kills",
        "",
        f"- {topology.get('kills', '?')} kills; entities compared as sets "
        f"(server-named queues mapped through the RobustQueue objects): "
        f"{topology.get('entities', '?')}; same after every kill: "
        f"{topology.get('same_after_every_kill', '?')}",
        "",
        "### Stalled peer",
        "",
        f"- heartbeat {stall.get('heartbeat', '?')} s; {stall.get('stalls', '?')} stalls; "
        f"detection times {detections} s; detected by {stall.get('detected_by', '?')}",
        f"- recovery after detection {stall.get('recovery_after_detection_seconds', '?')} s",
        "",
        "### Close at awkward moments",
        "",
        "| moment | seconds | tasks left | broker connections left | loop exceptions "
        "| other problems |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {moment} | {facts.get('seconds', 'n/a')} | {facts.get('tasks_left') or 0} "
        f"| {facts.get('connections_left_on_broker')} | {len(facts.get('loop_exceptions', []))} "
        f"| {'; '.join(facts.get('violations', [])) or '-'} |"
        for moment, facts in closes.items()
    ]
    lines += ["", "## Raw figures", "", "```json", json.dumps(figures, indent=2), "```", ""]
    return "\n".join(lines)


# Sections after this line come from other tests (the fault matrix, fuzzing):
# a new report keeps them as they are.
KEPT = "<!-- written by hand or other tools: scripts/reliability.py keeps what follows -->"


def kept_sections(out: Path) -> str:
    text = out.read_text() if out.exists() else ""
    start = text.find(KEPT)
    return "\n" + text[start:] if start >= 0 else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "RELIABILITY.md"))
    options, pytest_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        figures_file = Path(scratch) / "figures.json"
        junit = Path(scratch) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            TESTS,
            "-p",
            "no:cacheprovider",
            "-q",
            "-rfEX",
            f"--junitxml={junit}",
            *pytest_args,
        ]
        python = Path(sys.executable)
        if python.is_relative_to(ROOT):
            python = python.relative_to(ROOT)
        shown = f"{python} scripts/reliability.py"
        shown += f"  (runs: AMQPFAST_RELIABILITY_OUT=FILE pytest {TESTS})"
        started = time.monotonic()
        status = subprocess.call(
            command, cwd=ROOT, env={**os.environ, "AMQPFAST_RELIABILITY_OUT": str(figures_file)}
        )
        took = time.monotonic() - started
        figures = json.loads(figures_file.read_text()) if figures_file.exists() else {}
        tests = outcomes(junit) if junit.exists() else []
    out = Path(options.out)
    out.write_text(report(figures, tests, shown, took, status) + kept_sections(out))
    print(f"wrote {options.out} ({shlex.join(command[:4])}: exit {status}, {took:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
