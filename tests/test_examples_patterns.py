"""The pattern and pool example programs run as users run them, against the broker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_master_worker_jobs_all_done_once(amqp_url: str):
    done = run_example("master_worker.py", amqp_url, "9")

    sent = re.findall(r"\[master\] sent (\S+)", done.stdout)
    resized = re.findall(r"\[worker (\d)\] resized (\S+) to 128px", done.stdout)
    assert sent == [f"photo-{n}.png" for n in range(9)]
    assert sorted(image for _, image in resized) == sorted(sent)
    assert len({worker for worker, _ in resized}) > 1  # shared among the workers
    assert " [x] 9 jobs done" in done.stdout


def test_rpc_caller_gets_what_the_callee_computed(amqp_url: str):
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / "rpc_callee.py"), amqp_url, "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as callee:
        try:
            assert callee.stdout is not None
            assert callee.stdout.readline() == " [x] Awaiting RPC requests\n"
            caller = run_example("rpc_caller.py", amqp_url, "4")
            callee_out, callee_err = callee.communicate(timeout=60)
        finally:
            if callee.poll() is None:
                callee.kill()
    assert callee.returncode == 0, callee_err

    served = re.findall(r"\[\.\] (\w+\(x=\S+, y=\S+\))", callee_out)
    answered = re.findall(r"\[x\] (multiply\(x=\d+, y=\d+\)) = (\d+)", caller.stdout)
    assert served == [f"multiply(x={n}, y={n + 1})" for n in range(4)] + ["divide(x=1, y=0)"]
    assert answered == [(f"multiply(x={n}, y={n + 1})", str(n * (n + 1))) for n in range(4)]
    assert "divide(x=1, y=0) raised ZeroDivisionError: division by zero" in caller.stdout
    assert " [x] Served 5 calls" in callee_out


def test_pooling_consumes_what_it_published(amqp_url: str):
    done = run_example("pooling.py", amqp_url, "25")

    published = re.findall(r"\[>\] published '(.+)'", done.stdout)
    consumed = re.findall(r"\[<\] consumed '(.+)'", done.stdout)
    assert sorted(published) == sorted(f"message {n}" for n in range(25))
    assert sorted(consumed) == sorted(published)
    assert " [x] 25 messages through the pools" in done.stdout
