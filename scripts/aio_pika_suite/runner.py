"""Runs aio-pika's own test suite against amqpfast (see scripts/aio_pika_suite.sh).

Steps: fetch aio-pika's sdist (cached), copy its tests/ into a fresh run
directory with our conftest.py and docker_client.py over aio-pika's Docker
ones, make a virtual host on the shared broker and boot a private node (with
a TLS listener) for the tests that kill or restart their broker, then run the
test files in worker processes, three at a time.

Nothing may hang the run: every test has a hard time limit (pytest-timeout,
which ends the process), and a process that ends early is started again on
the tests it did not reach; the test it was in counts as hung. The summary
counts a test that never ran as not reached, never as passed, and compares
the failures with the expected differences in expected.txt (each listed with
its reason in docs/src/migration.md).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from amqpfast.testing import RabbitmqctlAdmin
from amqpfast.testing.node import RabbitNode, TLSFiles

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CACHE = ROOT / ".suite"


@dataclass(frozen=True)
class Upstream:
    """A project whose test suite runs here, and how."""

    project: str
    version: str
    conftest: str | None  # ours, to put over theirs (theirs needs Docker)
    private_broker: bool  # every test on the private node, not the shared broker
    certs: str | None  # the sdist's TLS files for the node, else made here


UPSTREAMS = {
    "aio-pika": Upstream("aio-pika", "10.2.1", "conftest.py", False, None),
    # aiormq's conftest needs no Docker; it lacks only the broker fixtures,
    # which suite_plugin.py adds. Its amqps tests need its own certificates.
    "aiormq": Upstream("aiormq", "7.2.4", None, True, "tests/certs"),
}
INDEX = "https://pypi.org/simple"
DEFAULT_TIMEOUT = 45  # seconds per test, unless the test asks for more itself
BROKER_URL = os.environ.get("AMQPFAST_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/")


def log(message: str) -> None:
    print(f"==> {message}", flush=True)


# ---------------------------------------------------------------- the sources


def fetch_sdist(project: str, version: str) -> Path:
    """The sdist of project==version, from the package index (checked by its sha256)."""
    filename = f"{project.replace('-', '_')}-{version}.tar.gz"
    target = CACHE / filename
    if target.exists():
        return target
    CACHE.mkdir(exist_ok=True)
    page = urllib.request.urlopen(f"{INDEX}/{project}/", timeout=60).read().decode()
    match = re.search(rf'href="([^"]*/{re.escape(filename)})#sha256=([0-9a-f]+)"', page)
    if match is None:
        raise SystemExit(f"{filename} is not on {INDEX}")
    url, digest = match.groups()
    data = urllib.request.urlopen(url, timeout=120).read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise SystemExit(f"{filename}: sha256 mismatch")
    target.write_bytes(data)
    return target


def prepare_tests(run_dir: Path, upstream: Upstream) -> Path:
    """The project's tests/ in run_dir, with our conftest and Docker stand-in."""
    sdist = fetch_sdist(upstream.project, upstream.version)
    prefix = f"{upstream.project.replace('-', '_')}-{upstream.version}/tests/"
    tests = run_dir / "tests"
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                target = tests / member.name[len(prefix) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                target.write_bytes(source.read())
    shutil.copy(HERE / "docker_client.py", tests / "docker_client.py")
    if upstream.conftest:
        shutil.copy(HERE / upstream.conftest, tests / "conftest.py")
    (run_dir / "pytest.ini").write_text(
        "[pytest]\n"
        "addopts = -p no:asyncio -p no:cacheprovider -p suite_plugin\n"
        "markers =\n    asyncio: asyncio\n"
    )
    return tests


def test_timeout(path: Path) -> int:
    """Seconds a test of this file may take: the default, or more if a test asks
    for more with its own aiomisc.timeout(...)."""
    asked = [int(float(t)) for t in re.findall(r"timeout\((\d+(?:\.\d+)?)\)", path.read_text())]
    return max([DEFAULT_TIMEOUT, *(t + 15 for t in asked)])


# ---------------------------------------------------------------- brokers


def tls_files(run_dir: Path, upstream: Upstream) -> TLSFiles:
    """The project's own certificates (clients check them), else new ones."""
    if upstream.certs:
        certs = run_dir / upstream.certs
        return TLSFiles(
            str(certs / "ca.pem"), str(certs / "server.pem"), str(certs / "server.key"), True
        )
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = TLSFiles(str(run_dir / "ca.pem"), str(run_dir / "cert.pem"), str(run_dir / "key.pem"))
    ca.cert_pem.write_to_path(files.cafile)
    server.cert_chain_pems[0].write_to_path(files.certfile)
    server.private_key_pem.write_to_path(files.keyfile)
    return files


class NodeAdmin:
    """Virtual hosts on the private node (RabbitmqctlAdmin's two calls)."""

    def __init__(self, node: RabbitNode) -> None:
        self.node = node

    def add_vhost(self, vhost: str, user: str) -> None:
        self.node.rabbitmqctl("add_vhost", vhost)
        self.node.rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        self.node.rabbitmqctl("delete_vhost", vhost)


# ---------------------------------------------------------------- running


class Results:
    """Outcome per test id, from the lines the conftest appends as tests end."""

    def __init__(self) -> None:
        self.outcome: dict[str, str] = {}
        self.why: dict[str, str] = {}  # the traceback's end, for failures
        self.lock = threading.Lock()

    def read(self, path: Path) -> None:
        """Record the outcomes path holds."""
        if not path.exists():
            return
        with self.lock:
            for line in path.read_text().splitlines():
                try:
                    report = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                nodeid, when, outcome = report["nodeid"], report["when"], report["outcome"]
                self.outcome[nodeid] = merge(self.outcome.get(nodeid), when, outcome)
                if "why" in report:
                    self.why[nodeid] = report["why"]


def merge(previous: str | None, when: str, outcome: str) -> str:
    """One outcome per test: error (setup/teardown failed) > failed > skipped > passed."""
    current = ("failed" if when == "call" else "error") if outcome == "failed" else outcome
    order = ["passed", "skipped", "failed", "error"]
    if previous is None:
        return current
    return max(previous, current, key=order.index)


def collect(run_dir: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """Test ids per file, in the order pytest runs them."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    files: dict[str, list[str]] = collections.defaultdict(list)
    for line in done.stdout.splitlines():
        if "::" in line and line.startswith("tests/"):
            files[line.split("::")[0]].append(line.strip())
    if not files:
        print(done.stdout[-5000:], done.stderr[-5000:])
        raise SystemExit("collection found no tests")
    errors = re.findall(r"^ERROR (\S+)", done.stdout, re.M)
    for path in errors:
        files.setdefault(path, [])  # a module that does not import: all of it fails
    return files


class Suite:
    """One run: where it happens, with what, and what came of each test."""

    def __init__(
        self,
        upstream: Upstream,
        run_dir: Path,
        env: dict[str, str],
        extra: list[str],
        name: str = "run",
    ) -> None:
        self.upstream = upstream
        self.name = name  # keeps the result files of a retry apart
        self.run_dir = run_dir
        self.env = env
        self.extra = extra  # more pytest arguments (-k ...)
        self.results = Results()
        self.hung: list[str] = []
        self.broken: list[str] = []  # files that do not import
        self.flaky: list[str] = []  # failed, then passed when run again

    def run_file(self, path: str, tests: list[str], url: str, whole: bool = True) -> None:
        """Run one file's tests (all of it if `whole`, else just `tests`), again and
        again from where a killed process stopped."""
        timeout = test_timeout(self.run_dir / path)
        remaining = list(tests)
        attempt = 0
        while True:
            attempt += 1
            out = self.run_dir / self.name / f"{path.replace('/', '_')}.{attempt}.jsonl"
            out.parent.mkdir(exist_ok=True)
            args = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly"]
            args += [f"--timeout={timeout}", "--timeout-method=thread", *self.extra]
            args += [path] if whole and attempt == 1 else remaining
            with open(out.with_suffix(".log"), "w") as output:
                env = {**self.env, "AMQPFAST_SUITE_URL": url}
                returncode = _run_bounded(args, self.run_dir, env, out, output, timeout)
            self.results.read(out)
            if not tests:
                self.broken.append(path)
                return
            left = [t for t in remaining if t not in self.results.outcome]
            if returncode == 0 or not left:
                return
            # The process ended early: the first test it did not finish hung or crashed it.
            self.hung.append(left[0])
            remaining = left[1:]
            if not remaining:
                return


def _run_bounded(
    args: list[str],
    run_dir: Path,
    env: dict[str, str],
    out: Path,
    output: object,
    timeout: int,
) -> int:
    """Run pytest; if even pytest-timeout cannot end it, kill its process group."""
    process = subprocess.Popen(
        args,
        cwd=run_dir,
        env={**env, "AMQPFAST_SUITE_RESULTS": str(out)},
        stdout=output,  # type: ignore[arg-type]
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    last_progress = time.monotonic()
    size = 0
    while process.poll() is None:
        time.sleep(0.5)
        current = out.stat().st_size if out.exists() else 0
        if current != size:
            size, last_progress = current, time.monotonic()
        elif time.monotonic() - last_progress > timeout + 60:
            os.killpg(process.pid, 9)
            process.wait()
            return -9
    return process.returncode


# ---------------------------------------------------------------- the summary


def read_listed(name: str) -> dict[str, str]:
    """Test id (or file) -> reason, from expected.txt or known_failures.txt."""
    listed = {}
    for line in (HERE / name).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            nodeid, _, reason = line.partition(" ")
            listed[nodeid] = reason.strip()
    return listed


def summarize(
    suite: Suite, files: dict[str, list[str]], took: float, target: str, explain: int
) -> list[str]:
    """Print the counts and lists; return the ids of the tests that did not pass."""
    counts: collections.Counter[str] = collections.Counter()
    not_passed: list[tuple[str, str]] = []
    print(f"\n{suite.upstream.project} {suite.upstream.version}'s test suite on {target}")
    for path, tests in sorted(files.items()):
        file_counts: collections.Counter[str] = collections.Counter()
        if path in suite.broken:
            file_counts["error"] += 1
            not_passed.append((path, "error"))  # the module does not import
        for nodeid in tests:
            outcome = suite.results.outcome.get(nodeid, "not reached")
            if nodeid in suite.hung:
                outcome = "hung"
            if outcome not in ("passed", "skipped"):
                not_passed.append((nodeid, outcome))
            file_counts[outcome] += 1
        print(f"  {path:48} " + ", ".join(f"{n} {k}" for k, n in sorted(file_counts.items())))
        counts.update(file_counts)
    total = sum(counts.values())
    print(
        f"\n{total} tests in {took:.0f} s: "
        + ", ".join(f"{n} {k}" for k, n in counts.most_common())
    )
    if suite.flaky:
        print("\nfailed, then passed when run again (flaky):")
        for nodeid in suite.flaky:
            print(f"  {nodeid}")
    if not_passed:
        print("\nnot passed:")
        for nodeid, outcome in not_passed:
            print(f"  {outcome:12} {nodeid}")
            if explain and nodeid in suite.results.why:
                print(explanation(suite.results.why[nodeid], explain))
    return [nodeid for nodeid, _ in not_passed]


def explanation(traceback: str, lines: int) -> str:
    """Where in the test file the failure went through, and its last lines."""
    text = traceback.splitlines()
    places = [line for line in text[:-lines] if re.match(r"^tests/\S+:\d+: ", line)]
    return "".join(f"      | {line}\n" for line in [*places, *text[-lines:]])


def judge(not_passed: list[str], ran: set[str]) -> int:
    """0 unless a test failed that is neither an expected difference nor a known failure."""
    expected = read_listed("expected.txt")
    known = read_listed("known_failures.txt")
    counted = [
        ("expected differences (docs/src/migration.md)", expected),
        ("known failures (still to fix: issue 10)", known),
    ]
    for title, listed in counted:
        mine = [nodeid for nodeid in listed if nodeid in ran]
        if not mine:
            continue
        print(f"\n{title}: {sum(n in not_passed for n in mine)} of {len(mine)} still fail")
        for nodeid in mine:
            if nodeid not in not_passed:
                print(f"  passes now, take it off the list: {nodeid}")
    regressions = [n for n in not_passed if n not in expected and n not in known]
    if regressions:
        print(f"\n{len(regressions)} failures that are not listed:")
        for nodeid in regressions:
            print(f"  {nodeid}")
    return 1 if regressions else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", help="test files (tests/test_amqp.py ...); default all")
    parser.add_argument("-k", dest="keyword", help="only the tests pytest -k selects")
    parser.add_argument(
        "--suite", choices=sorted(UPSTREAMS), default="aio-pika", help="whose tests to run"
    )
    parser.add_argument(
        "--target",
        choices=["amqpfast", "upstream"],
        default="amqpfast",
        help="run them on amqpfast, or on the project itself (a reference run)",
    )
    parser.add_argument("--jobs", type=int, default=3, help="test files run at once")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    parser.add_argument(
        "--no-retry",
        dest="retry",
        action="store_false",
        help="do not run unlisted failures a second time",
    )
    parser.add_argument(
        "--explain", type=int, default=0, metavar="N", help="show N lines of each failure"
    )
    parser.add_argument(
        "--write-failures", metavar="FILE", help="write the ids of the tests that did not pass"
    )
    options = parser.parse_args()

    started = time.monotonic()
    CACHE.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    upstream = UPSTREAMS[options.suite]
    prepare_tests(run_dir, upstream)
    node = RabbitNode(tls=tls_files(run_dir, upstream))
    log(f"booting a private node for the kill/restart and TLS tests: {node.node}")
    node.start()
    # One vhost per worker: files that run at the same time must not share
    # names (upstream runs its files one after another).
    admin: NodeAdmin | RabbitmqctlAdmin
    if upstream.private_broker:
        admin, base_url = NodeAdmin(node), node.url
    else:
        admin, base_url = RabbitmqctlAdmin(), BROKER_URL
    vhosts = [f"suite-{uuid.uuid4().hex[:8]}-{worker}" for worker in range(options.jobs)]
    try:
        for vhost in vhosts:
            admin.add_vhost(vhost, "guest")
        urls = [f"{base_url.rstrip('/')}/{vhost}" for vhost in vhosts]
        env = dict(os.environ)
        env.update(
            AMQPFAST_SUITE_TARGET=options.target,
            AMQPFAST_SUITE_URL=urls[0],
            AMQPFAST_SUITE_NODE=str(node.base_dir),
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        )
        files = collect(run_dir, env)
        if options.files:
            files = {path: tests for path, tests in files.items() if path in options.files}
        extra = ["-k", options.keyword] if options.keyword else []
        if options.keyword:
            # -k narrows what runs; count only what it selects.
            files = {
                path: [t for t in tests if _selected(t, options.keyword)]
                for path, tests in files.items()
            }
            files = {path: tests for path, tests in files.items() if tests}
        log(f"running {sum(map(len, files.values()))} tests in {len(files)} files")
        suite = Suite(upstream, run_dir, env, extra)
        run_files(suite, files, urls)
        if options.retry:
            retry_flaky(suite, files, options.target, urls)
        took = time.monotonic() - started
        not_passed = summarize(suite, files, took, options.target, options.explain)
        if options.write_failures:
            Path(options.write_failures).write_text("".join(f"{n}\n" for n in not_passed))
        if options.target != "amqpfast" or options.suite != "aio-pika":
            return 1 if not_passed else 0
        ran = {nodeid for tests in files.values() for nodeid in tests} | set(files)
        return judge(not_passed, ran)
    finally:
        for vhost in vhosts:
            with contextlib.suppress(Exception):
                admin.delete_vhost(vhost)
        node.close()
        if options.keep:
            log(f"run directory kept: {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


# Seconds the slow files of aio-pika 10.2.1's suite took in a full run here
# (2026-12-06), nearly all of it in the tests' own sleeps: they start first, so
# that none of them is left to run alone at the end. Any other file is
# reckoned at a fifth of a second per test; the figures only set the order.
SLOW_FILES = {
    "tests/test_amqp_robust_proxy.py": 96,
    "tests/test_amqp_robust.py": 72,
    "tests/test_robust_recovery.py": 70,
    "tests/test_pool.py": 62,
    "tests/test_amqp.py": 49,
    "tests/test_amqps.py": 27,
}


def run_files(
    suite: Suite, files: dict[str, list[str]], urls: list[str], whole: bool = True
) -> None:
    """Run the files, the longest first, in one worker per broker URL."""
    queue = sorted(files, key=lambda p: -SLOW_FILES.get(p, len(files[p]) / 5))
    # Files that use the private node run one at a time: they restart it. A
    # worker skips them while the node is taken, and waits only when nothing
    # else is left.
    uses_node = {path: "docker" in (suite.run_dir / path).read_text() for path in queue}
    changed = threading.Condition()
    node_taken = False

    def next_file() -> str | None:
        nonlocal node_taken
        with changed:
            while queue:
                for path in queue:
                    if not (uses_node[path] and node_taken):
                        queue.remove(path)
                        node_taken = node_taken or uses_node[path]
                        return path
                changed.wait()
            return None

    def worker(url: str) -> None:
        nonlocal node_taken
        while (path := next_file()) is not None:
            start = time.monotonic()
            try:
                suite.run_file(path, files[path], url, whole)
            finally:
                if uses_node[path]:
                    with changed:
                        node_taken = False
                        changed.notify_all()
            log(f"{path} done in {time.monotonic() - start:.0f} s")

    workers = [threading.Thread(target=worker, args=(url,)) for url in urls]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()


def retry_flaky(suite: Suite, files: dict[str, list[str]], target: str, urls: list[str]) -> None:
    """Run once more, each in a fresh process, the tests that failed and are on no
    list; one that passes then counts as passed, and is named as flaky."""
    listed = read_listed("expected.txt") | read_listed("known_failures.txt")
    failed = {
        path: [
            nodeid
            for nodeid in tests
            if suite.results.outcome.get(nodeid) in ("failed", "error")
            and (
                target != "amqpfast" or suite.upstream.project != "aio-pika" or nodeid not in listed
            )
        ]
        for path, tests in files.items()
    }
    failed = {path: tests for path, tests in failed.items() if tests}
    if not failed:
        return
    log(f"running the {sum(map(len, failed.values()))} failed tests once more")
    again = Suite(suite.upstream, suite.run_dir, suite.env, [], name="retry")
    run_files(again, failed, urls, whole=False)
    for tests in failed.values():
        for nodeid in tests:
            if again.results.outcome.get(nodeid) == "passed":
                suite.results.outcome[nodeid] = "passed"
                suite.flaky.append(nodeid)


def _selected(nodeid: str, keyword: str) -> bool:
    # A simple stand-in for -k: substring match on the test id (no and/or/not).
    return keyword in nodeid


if __name__ == "__main__":
    sys.exit(main())
