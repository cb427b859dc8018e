"""The RabbitMQ tutorials (examples/tutorials) run as users run them, against the broker.

Each program runs in a subprocess. A receiver that must exist before the
sender publishes (a fanout, direct or topic binding, an RPC server, workers
that share tasks) is started first and the test waits for its "Waiting" line.
The tests are plain functions: subprocesses gain nothing from running once
per event loop, and the suite stays fast.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from amqpfast import connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TUTORIALS = EXAMPLES / "tutorials"
TIMEOUT = 30  # seconds for any one program; they take well under one


def program_env(amqp_url: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # lines reach the test as printed
    env.pop("AMQP_URL", None)
    if amqp_url is not None:
        env["AMQP_URL"] = amqp_url
    return env


def run(script: Path, *arguments: str, amqp_url: str | None) -> list[str]:
    """Run a program to its end; its stdout lines."""
    done = subprocess.run(
        [sys.executable, str(script), *arguments],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=program_env(amqp_url),
        check=False,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout}{done.stderr}"
    return done.stdout.splitlines()


class Background:
    """A program running alongside the test, its stdout read line by line."""

    def __init__(self, script: Path, *arguments: str, amqp_url: str) -> None:
        self.name = script.name
        self.process = subprocess.Popen(
            [sys.executable, str(script), *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=program_env(amqp_url),
        )
        self.lines: list[str] = []
        self.stderr: list[str] = []
        self._new_lines: queue.Queue[str | None] = queue.Queue()
        # Threads drain both pipes, so that the program never blocks on a full one.
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new_lines.put(line)
        self._new_lines.put(None)  # end of output

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr.extend(self.process.stderr)

    def wait_for(self, marker: str, timeout: float = TIMEOUT) -> None:
        """Wait until the program prints a line containing ``marker``."""
        while True:
            try:
                line = self._new_lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"{self.name} did not print {marker!r} within {timeout} s")
            if line is None:
                pytest.fail(f"{self.name} ended before printing {marker!r}: {self.output()}")
            if marker in line:
                return

    def finish(self, timeout: float = TIMEOUT) -> list[str]:
        """Wait for the program to end by itself; its stdout lines."""
        try:
            returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not end within {timeout} s: {self.output()}")
        for reader in self._readers:
            reader.join(timeout)
        assert returncode == 0, f"{self.name} failed: {self.output()}"
        return self.lines

    def output(self) -> str:
        return "\n".join(self.lines) + "\n" + "".join(self.stderr)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def start(amqp_url: str) -> Iterator[Callable[..., Background]]:
    """Start a program in the background; whatever still runs at the end is killed."""
    started: list[Background] = []

    def start_program(script: Path, *arguments: str) -> Background:
        program = Background(script, *arguments, amqp_url=amqp_url)
        started.append(program)
        return program

    yield start_program
    for program in started:
        program.kill()


def delete_queues(amqp_url: str, *names: str) -> None:
    """Delete queues the programs declared (durable ones would outlive them)."""

    async def delete() -> None:
        async with await connect(amqp_url) as connection:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)

    asyncio.run(asyncio.wait_for(delete(), TIMEOUT))


# ---------------------------------------------------------------- 1: hello world


def test_hello_world(amqp_url, unique, start):
    prefix = f"{unique}-"
    receiver = start(TUTORIALS / "receive.py", "--prefix", prefix, "--count", "2")
    receiver.wait_for("Waiting for messages")
    try:
        sent = run(TUTORIALS / "send.py", "--prefix", prefix, amqp_url=amqp_url)
        sent += run(TUTORIALS / "send.py", "--prefix", prefix, "Bye", "now!", amqp_url=amqp_url)
        received = receiver.finish()
    finally:
        delete_queues(amqp_url, f"{prefix}hello")

    assert sent == [" [x] Sent 'Hello World!'", " [x] Sent 'Bye now!'"]
    assert received[1:] == [" [x] Received 'Hello World!'", " [x] Received 'Bye now!'"]


def test_url_option_beats_the_environment(amqp_url, unique):
    # No AMQP_URL: the program gets the broker from --url alone.
    prefix = f"{unique}-"
    try:
        sent = run(TUTORIALS / "send.py", "--url", amqp_url, "--prefix", prefix, amqp_url=None)
        arguments = ["--url", amqp_url, "--prefix", prefix, "--count", "1"]
        received = run(TUTORIALS / "receive.py", *arguments, amqp_url=None)
    finally:
        delete_queues(amqp_url, f"{prefix}hello")

    assert sent == [" [x] Sent 'Hello World!'"]
    assert received[-1] == " [x] Received 'Hello World!'"


# ---------------------------------------------------------------- 2: work queues


def test_work_queue_shares_tasks_between_two_workers(amqp_url, unique, start):
    prefix = f"{unique}-"
    # Short dots keep the test quick; the idle timeout is what ends the workers.
    worker_arguments = ("--prefix", prefix, "--idle-timeout", "3", "--seconds-per-dot", "0.05")
    workers = [start(TUTORIALS / "worker.py", *worker_arguments) for _ in range(2)]
    try:
        for worker in workers:
            worker.wait_for("Waiting for messages")
        tasks = [f"task {number} " + "." * number for number in range(1, 9)]
        for task in tasks:
            sent = run(TUTORIALS / "new_task.py", "--prefix", prefix, task, amqp_url=amqp_url)
            assert sent == [f" [x] Sent {task!r}"]
        outputs = [worker.finish() for worker in workers]
    finally:
        delete_queues(amqp_url, f"{prefix}task_queue")

    done_by = [
        [line.removeprefix(" [x] Received ") for line in lines if "Received" in line]
        for lines in outputs
    ]
    assert sorted(done_by[0] + done_by[1]) == sorted(repr(task) for task in tasks)
    assert done_by[0] and done_by[1], f"one worker did all the work: {done_by}"
    for lines in outputs:
        # each task received is done (and so acknowledged) before the next
        work = [line for line in lines if line.startswith(" [x]")]
        assert all("Received" in line for line in work[0::2]), lines
        assert work[1::2] == [" [x] Done"] * (len(work) // 2), lines
        assert "No task for 3.0 s, stopping" in lines[-1]


# ---------------------------------------------------------------- 3: publish/subscribe


def test_fanout_gives_every_receiver_every_line(amqp_url, unique, start):
    prefix = f"{unique}-"
    lines = ["info: starting", "warning: disk 90% full", "error: disk full"]
    receivers = [
        start(TUTORIALS / "receive_logs.py", "--prefix", prefix, "--count", str(len(lines)))
        for _ in range(2)
    ]
    for receiver in receivers:
        receiver.wait_for("Waiting for logs")  # bound: no line can be missed now
    sent: list[str] = []
    for line in lines:
        sent += run(TUTORIALS / "emit_log.py", "--prefix", prefix, line, amqp_url=amqp_url)

    assert sent == [f" [x] Sent {line!r}" for line in lines]
    for receiver in receivers:
        assert receiver.finish()[1:] == [f" [x] {line!r}" for line in lines]


# ---------------------------------------------------------------- 4: routing


def test_direct_exchange_routes_by_severity(amqp_url, unique, start):
    prefix = f"{unique}-"
    logs = [("info", "user logged in"), ("error", "disk full"), ("warning", "slow disk")]
    logs += [("debug", "nobody listens"), ("error", "out of memory")]
    errors_only = start(
        TUTORIALS / "receive_logs_direct.py", "--prefix", prefix, "--count", "2", "error"
    )
    arguments = ["--prefix", prefix, "--count", "4", "info", "warning", "error"]
    everything = start(TUTORIALS / "receive_logs_direct.py", *arguments)
    errors_only.wait_for("Waiting for logs")
    everything.wait_for("Waiting for logs")
    for severity, text in logs:
        arguments = ["--prefix", prefix, severity, text]
        sent = run(TUTORIALS / "emit_log_direct.py", *arguments, amqp_url=amqp_url)
        assert sent == [f" [x] Sent {severity!r}:{text!r}"]

    def expected(severities: set[str]) -> list[str]:
        return [f" [x] {key!r}:{text!r}" for key, text in logs if key in severities]

    assert errors_only.finish()[1:] == expected({"error"})
    assert everything.finish()[1:] == expected({"info", "warning", "error"})


def test_direct_emitter_defaults_to_info(amqp_url, unique, start):
    prefix = f"{unique}-"
    receiver = start(
        TUTORIALS / "receive_logs_direct.py", "--prefix", prefix, "--count", "1", "info"
    )
    receiver.wait_for("Waiting for logs")
    run(TUTORIALS / "emit_log_direct.py", "--prefix", prefix, amqp_url=amqp_url)

    assert receiver.finish()[1:] == [" [x] 'info':'Hello World!'"]


# ---------------------------------------------------------------- 5: topics


def test_topic_exchange_routes_by_pattern(amqp_url, unique, start):
    prefix = f"{unique}-"
    logs = [
        ("kern.critical", "A critical kernel error"),
        ("kern.info", "kernel booted"),
        ("cron.critical", "cron died"),
        ("anonymous.info", "hello"),
        ("kern.disk.critical", "three words: not kern.*, not *.critical"),
    ]
    counts = {"kern.*": 2, "*.critical": 2, "#": 5}
    receivers = {
        pattern: start(
            TUTORIALS / "receive_logs_topic.py", "--prefix", prefix, "--count", str(count), pattern
        )
        for pattern, count in counts.items()
    }
    arguments = ["--prefix", prefix, "--count", "3", "kern.*", "*.critical"]
    both = start(TUTORIALS / "receive_logs_topic.py", *arguments)
    for receiver in [*receivers.values(), both]:
        receiver.wait_for("Waiting for logs")
    for key, text in logs:
        sent = run(
            TUTORIALS / "emit_log_topic.py", "--prefix", prefix, key, text, amqp_url=amqp_url
        )
        assert sent == [f" [x] Sent {key!r}:{text!r}"]

    def expected(*keys: str) -> list[str]:
        return [f" [x] {key!r}:{text!r}" for key, text in logs if key in keys]

    assert receivers["kern.*"].finish()[1:] == expected("kern.critical", "kern.info")
    assert receivers["*.critical"].finish()[1:] == expected("kern.critical", "cron.critical")
    assert receivers["#"].finish()[1:] == expected(*(key for key, _ in logs))
    # a message matching two bindings of one queue arrives once
    assert both.finish()[1:] == expected("kern.critical", "kern.info", "cron.critical")


# ---------------------------------------------------------------- 6: RPC


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_rpc_client_gets_fibonacci_numbers_from_the_server(amqp_url, unique, start):
    prefix = f"{unique}-"
    numbers = [0, 1, 2, 10, 20, 25]
    server = start(TUTORIALS / "rpc_server.py", "--prefix", prefix, "--count", str(len(numbers)))
    server.wait_for("Awaiting RPC requests")
    try:
        # All requests go out at once: the answers come back in any order and
        # the correlation_id matches each to its request.
        arguments = ["--prefix", prefix, "--timeout", "10", *map(str, numbers)]
        client = run(TUTORIALS / "rpc_client.py", *arguments, amqp_url=amqp_url)
        served = server.finish()
    finally:
        delete_queues(amqp_url, f"{prefix}rpc_queue")

    answers = [line for line in client if line.startswith(" [.] Got")]
    assert sorted(answers) == sorted(f" [.] Got fib({n}) = {fib(n)}" for n in numbers)
    assert sorted(served[1:]) == sorted(f" [.] fib({n})" for n in numbers)


def test_rpc_client_without_a_server_fails_at_once(amqp_url, unique):
    done = subprocess.run(
        [sys.executable, str(TUTORIALS / "rpc_client.py"), "--prefix", f"{unique}-", "7"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=program_env(amqp_url),
        check=False,
    )

    assert done.returncode == 1, done.stderr
    assert f" [!] fib(7): no server is listening on '{unique}-rpc_queue'" in done.stdout


# ---------------------------------------------------------------- 7: publisher confirms


def test_every_confirm_strategy_confirms_every_message(amqp_url):
    arguments = ["--messages", "1000", "--batch-size", "64"]
    lines = run(TUTORIALS / "publisher_confirms.py", *arguments, amqp_url=amqp_url)

    pattern = re.compile(
        r" \[x\] (?P<name>.+): published (?P<published>\d+) messages, (?P<confirmed>\d+) "
        r"confirmed, (?P<failed>\d+) not confirmed, (?P<held>\d+) in the queue, in \d+ ms"
    )
    results = [match.groupdict() for line in lines if (match := pattern.fullmatch(line))]
    names = [result["name"] for result in results]
    assert names == ["individually", "in batches of 64", "asynchronously"], lines
    for result in results:
        counts = [result[key] for key in ("published", "confirmed", "failed", "held")]
        assert counts == ["1000", "1000", "0", "1000"], result


# ---------------------------------------------------------------- transactions


def test_transaction_publisher_keeps_only_the_committed_batch(amqp_url, unique):
    arguments = ["--url", amqp_url, "--prefix", f"{unique}-"]
    lines = run(EXAMPLES / "transaction_publisher.py", *arguments, amqp_url=None)

    assert lines == [
        " [x] Committed 3 messages: ['committed 1', 'committed 2', 'committed 3']",
        " [x] Rolled back 2 messages: ['rolled back 1', 'rolled back 2']",
        " [x] The queue holds ['committed 1', 'committed 2', 'committed 3']",
    ]
