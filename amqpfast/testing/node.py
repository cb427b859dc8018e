"""A RabbitMQ node of this machine's own installation, private to a test run.

Tests that kill, stop or restart a broker, or need a TLS listener, must not
touch the shared broker: :class:`RabbitNode` boots another node of the
installed ``rabbitmq-server`` with its own node name, ports, Erlang cookie,
data and log directories (all under one temporary directory), and stops it by
its own pid. Booting takes a few seconds, so boot one per test session.

It can also raise the broker's resource alarms (memory, disk) on demand, which
make it block publishing connections (Connection.Blocked) as a real shortage
would. :func:`private_broker` boots one for an ``async with`` block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["NodeError", "RabbitNode", "ResourceAlarm", "TLSFiles", "free_port", "private_broker"]

_T = TypeVar("_T")

# Debian installs the real scripts here; /usr/sbin's wrappers would su to the
# rabbitmq user, who cannot read a root-owned temporary directory.
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")


class NodeError(RuntimeError):
    """The node did not boot, or a command on it failed."""


@dataclass(frozen=True)
class TLSFiles:
    """PEM files for the node's TLS listener: the CA that signed the server's
    certificate, the certificate and its key; with ``verify_peer`` the node
    checks the certificates clients offer (against ``cafile``)."""

    cafile: str
    certfile: str
    keyfile: str
    verify_peer: bool = False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _in_thread(func: Callable[..., _T], *args: Any) -> _T:
    # A thread cannot be stopped: a cancelled caller still waits for the
    # command to end, so that no boot or kill goes on behind its back.
    future = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller sees
        raise


def _executable(name: str) -> str:
    candidate = _DEBIAN_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise NodeError(f"{name} is not installed (Debian: apt-get install rabbitmq-server)")
    return found


class ResourceAlarm:
    """A resource alarm of a :class:`RabbitNode`, raised for a ``with`` block.

    ``with node.memory_alarm():`` raises it on entry and lifts it on exit. In
    async code use ``async with``: it runs ``rabbitmqctl`` in a thread, so the
    event loop, and the client under test, go on meanwhile.

    :param switch: turns the alarm on (``True``) or off (``False``).
    """

    __slots__ = ("_switch",)

    def __init__(self, switch: Callable[[bool], None]) -> None:
        self._switch = switch

    def __enter__(self) -> None:
        self._switch(True)

    def __exit__(self, *exc_info: object) -> None:
        self._switch(False)

    async def __aenter__(self) -> None:
        await _in_thread(self._switch, True)

    async def __aexit__(self, *exc_info: object) -> None:
        await _in_thread(self._switch, False)


class RabbitNode:
    """One private RabbitMQ node: :meth:`start`, :meth:`kill`, :meth:`stop`,
    :meth:`restart`, :meth:`close`, and resource alarms on demand
    (:meth:`memory_alarm`, :meth:`disk_alarm`).

    Its methods block (``rabbitmqctl`` takes about a second, a boot several):
    async tests call them through ``asyncio.to_thread``, or use
    ``async with`` on the alarms.

    :param name: the Erlang node name's first part (``<name>@localhost``);
        unique by default.
    :param tls: certificate files: when given, the node also listens for
        ``amqps://`` on :attr:`tls_port`.
    :param base_dir: where its data, logs and cookie live (a new temporary
        directory by default, removed by :meth:`close`).
    :param cookie: the Erlang cookie (a new random one by default): nodes
        that share one can form a cluster (:class:`~amqpfast.testing.cluster.RabbitCluster`).
    """

    #: the memory high watermark (a fraction of RAM) the node boots with, and
    #: gets back when a memory alarm is lifted
    MEMORY_HIGH_WATERMARK = 0.4
    #: the free disk space the node needs (booted with, and restored when a
    #: disk alarm is lifted)
    DISK_FREE_LIMIT = "50MB"

    def __init__(
        self,
        name: str | None = None,
        tls: TLSFiles | None = None,
        base_dir: str | None = None,
        cookie: str | None = None,
    ) -> None:
        self.node = f"{name or 'amqpfast-' + uuid.uuid4().hex[:8]}@localhost"
        self.tls = tls
        self._cookie = cookie
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="amqpfast-node-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.tls_port = free_port() if tls else None
        self._process: subprocess.Popen[bytes] | None = None
        self._alarms: set[str] = set()  # raised through this object
        self._write_config()

    @classmethod
    def attach(cls, base_dir: str) -> RabbitNode:
        """The node another process made in ``base_dir`` (to kill or restart it from here)."""
        state = json.loads((Path(base_dir) / "node.json").read_text())
        node = cls.__new__(cls)
        node.node = state["node"]
        node.tls = TLSFiles(**state["tls"]) if state["tls"] else None
        node._own_dir = False
        node._cookie = None  # the one written in base_dir is kept
        node.base_dir = Path(base_dir)
        node.port, node.dist_port, node.tls_port = state["ports"]
        node._process = None
        node._alarms = set()
        return node

    # ------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:<port>/``."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def tls_url(self) -> str:
        """The ``amqps://`` URL of the TLS listener (``tls`` must have been given)."""
        if self.tls_port is None:
            raise NodeError("this node has no TLS listener")
        return f"amqps://guest:guest@127.0.0.1:{self.tls_port}/"

    @property
    def pid(self) -> int | None:
        """The pid of the node's Erlang VM while it runs."""
        try:
            return int((self.base_dir / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def __repr__(self) -> str:
        return f"<RabbitNode {self.node} port={self.port} pid={self.pid}>"

    # ------------------------------------------------------------ life cycle

    def _write_config(self) -> None:
        base = self.base_dir
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        cookie = base / ".erlang.cookie"
        if self._cookie is not None:
            cookie.unlink(missing_ok=True)  # read-only: written anew
        if not cookie.exists():
            cookie.write_text(self._cookie or uuid.uuid4().hex.upper())
            cookie.chmod(0o400)
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "loopback_users = none",
            # written out: lifting an alarm sets them back to these
            f"vm_memory_high_watermark.relative = {self.MEMORY_HIGH_WATERMARK}",
            f"disk_free_limit.absolute = {self.DISK_FREE_LIMIT}",
        ]
        if self.tls:
            lines += [
                f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls.cafile}",
                f"ssl_options.certfile = {self.tls.certfile}",
                f"ssl_options.keyfile = {self.tls.keyfile}",
                f"ssl_options.verify = {'verify_peer' if self.tls.verify_peer else 'verify_none'}",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        (base / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (base / "enabled_plugins").write_text("[].\n")
        state = {
            "node": self.node,
            "ports": [self.port, self.dist_port, self.tls_port],
            "tls": vars(self.tls) if self.tls else None,
        }
        (base / "node.json").write_text(json.dumps(state))
        # Our own env file: the system one names the shared node.
        (base / "rabbitmq-env.conf").write_text(
            "ERL_EPMD_ADDRESS=127.0.0.1\n"
            'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
        )

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        env = dict(os.environ)
        env.update(
            HOME=str(base),  # the Erlang cookie is read from $HOME
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_PID_FILE=str(base / "pid"),
        )
        return env

    def start(self, timeout: float = 60.0) -> RabbitNode:
        """Boot the node (with the data it had, after a kill or stop) and wait
        until it answers the AMQP protocol header."""
        if self.running():
            return self
        (self.base_dir / "pid").unlink(missing_ok=True)
        log = open(self.base_dir / "log" / "console.log", "ab")  # noqa: SIM115 (kept by Popen)
        try:
            self._process = subprocess.Popen(
                [_executable("rabbitmq-server")],
                env=self._env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is not for it
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise NodeError(f"{self.node} exited while booting: see {self.base_dir}/log")
            if time.monotonic() > deadline:
                self.kill()
                raise NodeError(f"{self.node} did not boot within {timeout} s")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"AMQP\x00\x00\x09\x01")
                return len(sock.recv(8)) > 0
        except OSError:
            return False

    def running(self) -> bool:
        """Whether the node's VM is alive."""
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the node's VM, as a crash would (no Close is sent to clients)."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._process is not None:
            # Its session holds the wrapper script and a VM still booting.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the node down cleanly (clients get a connection.close first)."""
        if not self.running():
            self._reap()
            return
        try:
            self.rabbitmqctl("stop", timeout=timeout)
        except NodeError:
            self.kill()
        self._reap()

    def restart(self, kill: bool = False, timeout: float = 60.0) -> RabbitNode:
        """Stop the node and boot it again with its data, on the same ports.

        :param kill: SIGKILL it, as a crash would (no Connection.Close is
            sent to clients), instead of a clean shutdown.
        :param timeout: seconds the boot may take.
        """
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def _reap(self) -> None:
        self._alarms.clear()  # runtime settings: a new VM boots without them
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        (self.base_dir / "pid").unlink(missing_ok=True)

    def reset(self) -> None:
        """Forget every queue, exchange, vhost and user made since the first boot
        (as a new node would start); the node runs afterwards."""
        if self.running():
            self.rabbitmqctl("stop_app")
            self.rabbitmqctl("reset")
            self.rabbitmqctl("start_app")
            self._alarms.clear()  # the restarted app read its configuration again
        else:
            shutil.rmtree(self.base_dir / "mnesia", ignore_errors=True)
            (self.base_dir / "mnesia").mkdir()
            self.start()

    # ------------------------------------------------------------ resource alarms

    def set_memory_alarm(self, on: bool = True) -> None:
        """Raise or lift the memory alarm, at once.

        Raising sets the memory high watermark to 0; lifting sets it back to
        :attr:`MEMORY_HIGH_WATERMARK`. While the alarm is on, the broker
        blocks each connection that publishes: it sends Connection.Blocked
        (to clients that announce the ``connection.blocked`` capability)
        and stops reading from it until the alarm is lifted
        (Connection.Unblocked). Connections that only consume go on.

        :param on: raise it (else lift it).
        """
        watermark = "0" if on else str(self.MEMORY_HIGH_WATERMARK)
        self.rabbitmqctl("set_vm_memory_high_watermark", watermark)
        self._mark_alarm("memory", on)

    def set_disk_alarm(self, on: bool = True) -> None:
        """Raise or lift the disk alarm, at once; publishers are blocked as
        with :meth:`set_memory_alarm`.

        Raising sets the free disk space the node needs to far more than any
        disk has; lifting sets it back to :attr:`DISK_FREE_LIMIT`.

        :param on: raise it (else lift it).
        """
        limit = str(2**60) if on else self.DISK_FREE_LIMIT
        self.rabbitmqctl("set_disk_free_limit", limit)
        self._mark_alarm("disk", on)

    def _mark_alarm(self, resource: str, on: bool) -> None:
        if on:
            self._alarms.add(resource)
        else:
            self._alarms.discard(resource)

    def memory_alarm(self) -> ResourceAlarm:
        """The memory alarm (:meth:`set_memory_alarm`) for a ``with`` or ``async with`` block."""
        return ResourceAlarm(self.set_memory_alarm)

    def disk_alarm(self) -> ResourceAlarm:
        """The disk alarm (:meth:`set_disk_alarm`) for a ``with`` or ``async with`` block."""
        return ResourceAlarm(self.set_disk_alarm)

    def alarms(self) -> list[str]:
        """What the node reports an alarm for now, e.g. ``["memory"]`` (``rabbitmqctl status``)."""
        status = json.loads(self.rabbitmqctl("status", "--formatter", "json"))
        return sorted({alarm.get("resource") or alarm["type"] for alarm in status["alarms"]})

    def clear_alarms(self) -> None:
        """Lift the alarms raised through this object that are still on."""
        if "memory" in self._alarms:
            self.set_memory_alarm(False)
        if "disk" in self._alarms:
            self.set_disk_alarm(False)

    def close(self) -> None:
        """Kill the node and remove its directory (when it made one)."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> args...`` and return what it printed."""
        try:
            done = subprocess.run(
                [_executable("rabbitmqctl"), "-n", self.node, *args],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as error:
            raise NodeError(f"rabbitmqctl {' '.join(args)}: no answer in {timeout} s") from error
        if done.returncode != 0:
            raise NodeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.asynccontextmanager
async def private_broker(
    name: str | None = None,
    tls: TLSFiles | None = None,
    base_dir: str | None = None,
    timeout: float = 60.0,
) -> AsyncIterator[RabbitNode]:
    """Boot a private :class:`RabbitNode` for an ``async with`` block, and
    kill and remove it afterwards::

        async with amqpfast.testing.private_broker() as node:
            connection = await amqpfast.connect(node.url)
            async with node.memory_alarm():
                ...  # publishing blocks here
            await asyncio.to_thread(node.restart, kill=True)

    The boot (several seconds) and the removal run in a thread, so the event
    loop goes on meanwhile. Boot one for many tests, not one each.

    :param name: the Erlang node name's first part (unique by default).
    :param tls: certificate files for an ``amqps://`` listener too.
    :param base_dir: where its data and logs live (a temporary directory by default).
    :param timeout: seconds the boot may take (:class:`NodeError` after that).
    """
    node = RabbitNode(name, tls, base_dir)
    try:
        await _in_thread(node.start, timeout)
        yield node
    finally:
        await _in_thread(node.close)
