"""A RabbitMQ cluster of this machine's own nodes, private to a test run.

:class:`RabbitCluster` boots ``size`` :class:`~amqpfast.testing.node.RabbitNode`
nodes that share one Erlang cookie, joins nodes 2..n to node 1 (``stop_app``,
``join_cluster``, ``start_app``) and checks with ``cluster_status`` that
every node runs in the one cluster. Each node has its own name
(``<prefix>-<n>@localhost``), AMQP and distribution ports, data and logs
under the cluster's directory: the shared broker is never touched. Nodes are
killed, started and restarted by their own pids.

From a shell (``scripts/cluster.sh`` runs this with the project's venv)::

    python -m amqpfast.testing.cluster up      # boot, print the URLs and the boot time
    python -m amqpfast.testing.cluster status  # one line per node: name, pid, URL
    python -m amqpfast.testing.cluster down    # kill the nodes, remove their files

The state file (``--state``, else ``$AMQPFAST_CLUSTER_STATE``, else
``.cluster/cluster.json`` in the current directory) records where the
cluster lives, so that ``status`` and ``down`` find it from another process.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .node import NodeError, RabbitNode, _in_thread

__all__ = ["RabbitCluster", "private_cluster"]

_T = TypeVar("_T")
_STATE_FILE = "cluster.json"
_DEFAULT_STATE = Path(".cluster") / _STATE_FILE


def _each(function: Callable[[_T], Any], items: Sequence[_T]) -> None:
    """``function(item)`` for every item at once (threads); the first error is
    raised once all are done."""
    if len(items) == 1:
        function(items[0])
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(function, item) for item in items]
    for future in futures:
        future.result()


def _is_our_vm(pid: int, node: RabbitNode) -> bool:
    """Whether ``pid`` is the Erlang VM of ``node`` (not a pid reused since):
    its command line gives the node's directory as ``-home``."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc to ask: trust the pid file
    except OSError:
        return True  # not ours to read: trust the pid file
    home = str(node.base_dir).encode()
    return any(flag == b"-home" and value == home for flag, value in itertools.pairwise(arguments))


class RabbitCluster:
    """A cluster of private RabbitMQ nodes: :meth:`boot` it, then :meth:`kill`,
    :meth:`start`, :meth:`restart` its nodes by index (0 is the node the
    others joined) and :meth:`close` it.

    Its methods block (a boot takes several seconds per node, ``rabbitmqctl``
    about one): async code calls them through ``asyncio.to_thread``, or uses
    :func:`private_cluster`.

    :param size: how many nodes (at least 1).
    :param base_dir: where the nodes' data, logs and the state live (a new
        temporary directory by default, removed by :meth:`close`).
    :param prefix: the first part of the node names (``<prefix>-1@localhost``
        ...); unique by default.
    """

    def __init__(
        self, size: int = 3, base_dir: str | None = None, prefix: str | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="amqpfast-cluster-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        # absolute: the nodes' VMs are recognised by it (see _is_our_vm)
        self.base_dir = self.base_dir.resolve()
        prefix = prefix or f"amqpfast-c{uuid.uuid4().hex[:6]}"
        cookie = uuid.uuid4().hex.upper()
        #: the nodes; ``nodes[0]`` is the one the others joined
        self.nodes: list[RabbitNode] = []
        taken: set[int | None] = set()
        for number in range(1, size + 1):
            while True:  # free_port() may give a port twice: each node gets its own
                node = RabbitNode(
                    f"{prefix}-{number}",
                    base_dir=str(self.base_dir / f"node{number}"),
                    cookie=cookie,
                )
                ports = {node.port, node.dist_port}
                if not ports & taken:
                    break
            taken |= ports
            self.nodes.append(node)
        #: seconds the last :meth:`boot` took (None before)
        self.boot_time: float | None = None
        self._joined = False  # nodes 2..n joined node 1 (they stay joined across restarts)
        self._write_state()

    @classmethod
    def attach(cls, base_dir: str) -> RabbitCluster:
        """The cluster another process made in ``base_dir`` (to see, kill or restart it)."""
        state = json.loads((Path(base_dir) / _STATE_FILE).read_text())
        cluster = cls.__new__(cls)
        cluster._own_dir = False
        cluster.base_dir = Path(base_dir).resolve()
        cluster.nodes = [RabbitNode.attach(str(cluster.base_dir / sub)) for sub in state["nodes"]]
        cluster.boot_time = state.get("boot_time")
        cluster._joined = state.get("joined", False)
        return cluster

    def _write_state(self) -> None:
        state = {
            "nodes": [node.base_dir.name for node in self.nodes],
            "boot_time": self.boot_time,
            "joined": self._joined,
        }
        (self.base_dir / _STATE_FILE).write_text(json.dumps(state))

    # ------------------------------------------------------------ addresses

    @property
    def urls(self) -> list[str]:
        """One ``amqp://guest:guest@127.0.0.1:<port>/`` URL per node, in node order."""
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """All nodes in one multi-host URL: ``amqp://guest:guest@127.0.0.1:<p1>,127.0.0.1:<p2>,.../``."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"amqp://guest:guest@{hosts}/"

    def index(self, port: int) -> int:
        """The index of the node whose AMQP listener is on ``port``.

        :param port: e.g. ``connection.url.port`` of a connection to the cluster.
        :raises ValueError: no node listens there.
        """
        for index, node in enumerate(self.nodes):
            if node.port == port:
                return index
        raise ValueError(f"no node of {self!r} listens on port {port}")

    def __repr__(self) -> str:
        names = ", ".join(node.node for node in self.nodes)
        return f"<RabbitCluster {names}>"

    # ------------------------------------------------------------ life cycle

    def boot(self, timeout: float = 120.0) -> RabbitCluster:
        """Start every node, join nodes 2..n to node 1 and wait until
        ``cluster_status`` lists them all running; :attr:`boot_time` is set.

        :param timeout: seconds for each step (a node's boot, a command).
        :raises NodeError: a node did not boot, a command failed or the
            cluster did not form in time; the nodes are killed then.
        """
        started = time.monotonic()
        try:
            _each(lambda node: node.start(timeout), self.nodes)
            first, others = self.nodes[0], self.nodes[1:]
            if others and not self._joined:
                _each(lambda node: node.rabbitmqctl("stop_app", timeout=timeout), others)
                for node in others:  # one at a time: each changes the cluster's schema
                    node.rabbitmqctl("join_cluster", first.node, timeout=timeout)
                _each(lambda node: node.rabbitmqctl("start_app", timeout=timeout), others)
                self._joined = True
                self._write_state()
            self.wait_for_nodes(timeout)
        except BaseException:
            self.kill_all()
            raise
        self.boot_time = time.monotonic() - started
        self._write_state()
        return self

    def status(self, via: int = 0) -> dict[str, Any]:
        """``rabbitmqctl cluster_status`` as JSON, asked of node ``via``.

        :param via: the index of the node to ask.
        """
        result: dict[str, Any] = json.loads(
            self.nodes[via].rabbitmqctl("cluster_status", "--formatter", "json")
        )
        return result

    def running_nodes(self, via: int = 0) -> list[str]:
        """The names of the nodes the cluster reports running (asked of node ``via``).

        :param via: the index of the node to ask.
        """
        return sorted(self.status(via).get("running_nodes", []))

    def wait_for_nodes(self, timeout: float = 60.0) -> None:
        """Wait until every node that runs is listed running by the others.

        :param timeout: seconds to wait.
        :raises NodeError: not so within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while True:
            running = [index for index in range(len(self.nodes)) if self.running(index)]
            expected = sorted(self.nodes[index].node for index in running)
            seen: list[str] = []
            with contextlib.suppress(NodeError, ValueError):
                seen = self.running_nodes(running[0]) if running else []
            if seen == expected:
                return
            if time.monotonic() > deadline:
                raise NodeError(f"the cluster lists {seen} running, expected {expected}")
            time.sleep(0.2)

    def running(self, index: int) -> bool:
        """Whether node ``index``'s VM is alive (not when its pid file names
        another process, or one that died and was not reaped).

        :param index: the node's index in :attr:`nodes`.
        """
        node = self.nodes[index]
        pid = node.pid
        return pid is not None and node.running() and _is_our_vm(pid, node)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``, as a crash would (clients get no Connection.Close).

        :param index: the node's index in :attr:`nodes`.
        """
        node = self.nodes[index]
        pid = node.pid
        if pid is not None and not _is_our_vm(pid, node):
            (node.base_dir / "pid").unlink(missing_ok=True)  # stale: not its VM any more
        node.kill()

    def start(self, index: int, timeout: float = 60.0) -> None:
        """Boot node ``index`` again (it rejoins the cluster with its data) and
        wait until the cluster lists it running.

        :param index: the node's index in :attr:`nodes`.
        :param timeout: seconds the boot may take.
        """
        self.nodes[index].start(timeout)
        self.wait_for_nodes(timeout)

    def restart(self, index: int, kill: bool = False, timeout: float = 60.0) -> None:
        """Stop node ``index`` (cleanly, or SIGKILL with ``kill``) and :meth:`start` it.

        :param index: the node's index in :attr:`nodes`.
        :param kill: a crash (no Connection.Close to clients) instead of a clean stop.
        :param timeout: seconds the boot may take.
        """
        if kill:
            self.kill(index)
        else:
            self.nodes[index].stop()
        self.start(index, timeout)

    def kill_all(self) -> None:
        """SIGKILL every node, all at once (their files stay)."""
        _each(self.kill, range(len(self.nodes)))

    def close(self) -> None:
        """Kill every node and remove the cluster's directory (when it made one)."""
        self.kill_all()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> RabbitCluster:
        return self.boot()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.asynccontextmanager
async def private_cluster(
    size: int = 3, base_dir: str | None = None, timeout: float = 120.0
) -> AsyncIterator[RabbitCluster]:
    """Boot a private :class:`RabbitCluster` for an ``async with`` block, and
    kill and remove it afterwards::

        async with amqpfast.testing.private_cluster() as cluster:
            connection = await amqpfast.connect_robust(cluster.urls)
            await asyncio.to_thread(cluster.kill, 0)

    The boot (several seconds per node) and the removal run in a thread, so
    the event loop goes on meanwhile. Boot one for many tests, not one each.

    :param size: how many nodes.
    :param base_dir: where their data and logs live (a temporary directory by default).
    :param timeout: seconds each step of the boot may take (:class:`NodeError` after that).
    """
    cluster = RabbitCluster(size, base_dir)
    try:
        await _in_thread(cluster.boot, timeout)
        yield cluster
    finally:
        await _in_thread(cluster.close)


# ---------------------------------------------------------------- command line


def _state_path(given: str | None) -> Path:
    return Path(given or os.environ.get("AMQPFAST_CLUSTER_STATE") or _DEFAULT_STATE)


def _recorded(state: Path) -> RabbitCluster | None:
    """The cluster the state file names, if its directory is still there."""
    try:
        base_dir = json.loads(state.read_text())["base_dir"]
        return RabbitCluster.attach(base_dir)
    except (OSError, ValueError, KeyError):
        return None


def _print_nodes(cluster: RabbitCluster) -> None:
    for index, node in enumerate(cluster.nodes):
        pid = node.pid if cluster.running(index) else None
        print(f"{node.node}\t{pid or 'stopped'}\t{node.url}")


def _up(state: Path, size: int, timeout: float) -> int:
    cluster = _recorded(state)
    if cluster is not None and any(map(cluster.running, range(len(cluster.nodes)))):
        print(f"a cluster is up already ({cluster.base_dir}): run down first", file=sys.stderr)
        return 1
    if cluster is not None:  # left behind by a crash or a reboot
        cluster.kill_all()
        shutil.rmtree(cluster.base_dir, ignore_errors=True)
    cluster = RabbitCluster(size)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"base_dir": str(cluster.base_dir)}) + "\n")
    try:
        cluster.boot(timeout)
    except NodeError as error:
        print(f"the cluster did not boot: {error}", file=sys.stderr)
        cluster.close()
        state.unlink(missing_ok=True)
        return 1
    _print_nodes(cluster)
    print(f"multi-host URL: {cluster.url}")
    nodes = "1 node" if size == 1 else f"{size} nodes"
    print(f"booted {nodes} in {cluster.boot_time:.1f} s ({cluster.base_dir})")
    return 0


def _status(state: Path) -> int:
    cluster = _recorded(state)
    if cluster is None:
        print(f"no cluster is up (no state in {state})", file=sys.stderr)
        return 1
    _print_nodes(cluster)
    return 0 if all(map(cluster.running, range(len(cluster.nodes)))) else 1


def _down(state: Path) -> int:
    cluster = _recorded(state)
    if cluster is None:
        print(f"no cluster is up (no state in {state})")
        state.unlink(missing_ok=True)
        return 0
    cluster.kill_all()
    shutil.rmtree(cluster.base_dir, ignore_errors=True)
    state.unlink(missing_ok=True)
    nodes = "1 node" if len(cluster.nodes) == 1 else f"{len(cluster.nodes)} nodes"
    print(f"killed {nodes}, removed {cluster.base_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m amqpfast.testing.cluster up|status|down``; the exit status.

    :param argv: the arguments (default: the command line's).
    """
    parser = argparse.ArgumentParser(
        prog="python -m amqpfast.testing.cluster",
        description="A private RabbitMQ cluster of this machine's nodes.",
    )
    parser.add_argument("command", choices=("up", "status", "down"))
    parser.add_argument(
        "--state",
        help="the state file (default: $AMQPFAST_CLUSTER_STATE, else .cluster/cluster.json)",
    )
    parser.add_argument("--size", type=int, default=3, help="how many nodes (up; default 3)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per boot step (up; default 120)"
    )
    options = parser.parse_args(argv)
    state = _state_path(options.state)
    if options.command == "up":
        return _up(state, options.size, options.timeout)
    if options.command == "status":
        return _status(state)
    return _down(state)


if __name__ == "__main__":
    sys.exit(main())
