"""Tools for testing applications that use amqpfast against a real RabbitMQ.

The pytest fixtures are in :mod:`amqpfast.testing.pytest_plugin` (enabled by
installing amqpfast: its ``pytest11`` entry point is named ``amqpfast``, so
``pytest -p amqpfast`` loads it even with plugin autoloading off). This module
does not import pytest; it holds what the fixtures are built on:

- :class:`TCPProxy`: a proxy between the client and the broker that can cut,
  stall, resume a connection or inject bytes into it;
- :class:`BrokerAdmin` and :func:`find_broker_admin`: create and delete virtual
  hosts and close connections as an operator would, through ``rabbitmqctl``
  (for a broker on this machine) or the management HTTP API;
- :func:`unique_name` and :func:`with_vhost`, :func:`with_query` for URLs;
- :class:`RabbitNode` and :func:`private_broker`: a RabbitMQ node of this
  machine's installation, private to the tests, that they may kill, restart
  and put in a memory or disk alarm;
- :class:`RabbitCluster` and :func:`private_cluster`: several such nodes
  joined in one cluster, whose nodes the tests may kill and start again.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .node import NodeError, RabbitNode, ResourceAlarm, TLSFiles, private_broker
from .proxy import TCPProxy

if TYPE_CHECKING:
    from .cluster import RabbitCluster, private_cluster

__all__ = [
    "DEFAULT_BROKER_URL",
    "BrokerAdmin",
    "BrokerAdminError",
    "ManagementAPIAdmin",
    "NodeError",
    "RabbitCluster",
    "RabbitNode",
    "RabbitmqctlAdmin",
    "ResourceAlarm",
    "TCPProxy",
    "TLSFiles",
    "broker_url_from_env",
    "find_broker_admin",
    "private_broker",
    "private_cluster",
    "unique_name",
    "with_query",
    "with_vhost",
]


def __getattr__(name: str) -> Any:
    # imported on first use: ``python -m amqpfast.testing.cluster`` runs that
    # module as __main__, which must not have been imported before
    if name in ("RabbitCluster", "private_cluster"):
        from . import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}


class BrokerAdminError(RuntimeError):
    """An administrative command failed, or no way to run one was found."""


def broker_url_from_env() -> str:
    """The broker URL for tests: ``$AMQPFAST_TEST_URL``, else :data:`DEFAULT_BROKER_URL`."""
    return os.environ.get("AMQPFAST_TEST_URL") or DEFAULT_BROKER_URL


def unique_name(prefix: str = "t") -> str:
    """A name no other test uses, for queues, exchanges, connections and vhosts.

    :param prefix: what the name starts with.
    """
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def with_vhost(url: str, vhost: str) -> str:
    """``url`` with its virtual host replaced (the credentials and query are kept).

    :param url: an ``amqp://`` or ``amqps://`` URL.
    :param vhost: the virtual host's name (quoted here: ``/`` becomes ``%2F``).
    """
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def with_query(url: str, **options: str | int | float) -> str:
    """``url`` with query options added or replaced, e.g. ``name=...`` or ``heartbeat=1``.

    :param url: an ``amqp://`` or ``amqps://`` URL.
    :param options: the options to set.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update({key: str(value) for key, value in options.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


def _credentials(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return unquote(parts.username or "guest"), unquote(parts.password or "guest")


class BrokerAdmin:
    """What the fixtures need of an operator: virtual hosts and closing connections.

    Subclasses: :class:`RabbitmqctlAdmin`, :class:`ManagementAPIAdmin`.
    """

    #: how the commands reach the broker, for messages
    method = "none"

    def check(self) -> None:
        """Raise :class:`BrokerAdminError` unless the commands work."""
        raise NotImplementedError

    def add_vhost(self, vhost: str, user: str) -> None:
        """Create a virtual host and give ``user`` every permission on it.

        :param vhost: the new virtual host's name.
        :param user: the user the tests connect as.
        """
        raise NotImplementedError

    def delete_vhost(self, vhost: str) -> None:
        """Delete a virtual host with everything in it.

        :param vhost: the virtual host's name.
        """
        raise NotImplementedError

    def close_connections_named(self, name: str, reason: str = "closed by the test") -> int:
        """Close, as an operator would, every connection with this client-given name.

        :param name: the connection's name (the ``name`` URL option of the client).
        :param reason: the reason the broker gives the client.
        :returns: how many connections were closed.
        """
        raise NotImplementedError


class RabbitmqctlAdmin(BrokerAdmin):
    """Administration through ``rabbitmqctl`` (the broker must run on this machine).

    :param executable: the ``rabbitmqctl`` to run.
    :param timeout: seconds any one command may take.
    """

    method = "rabbitmqctl"

    def __init__(self, executable: str = "rabbitmqctl", timeout: float = 60) -> None:
        self.executable = executable
        self.timeout = timeout

    def run(self, *args: str) -> str:
        """Run ``rabbitmqctl`` with these arguments; its output, or BrokerAdminError.

        :param args: the command and its arguments, e.g. ``"list_vhosts", "-q"``.
        """
        try:
            done = subprocess.run(
                [self.executable, *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BrokerAdminError(f"rabbitmqctl {' '.join(args)}: {error}") from error
        if done.returncode != 0:
            output = f"{done.stdout}{done.stderr}".strip()
            raise BrokerAdminError(f"rabbitmqctl {' '.join(args)} failed: {output}")
        return done.stdout

    def check(self) -> None:
        """Raise :class:`BrokerAdminError` unless rabbitmqctl reaches the broker."""
        self.run("list_vhosts", "-q")

    def add_vhost(self, vhost: str, user: str) -> None:
        """Create a virtual host and give ``user`` every permission on it.

        :param vhost: the new virtual host's name.
        :param user: the user the tests connect as.
        """
        self.run("add_vhost", vhost)
        self.run("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        """Delete a virtual host with everything in it.

        :param vhost: the virtual host's name.
        """
        self.run("delete_vhost", vhost)

    def connections_named(self, name: str) -> list[str]:
        """The broker's pids of the connections whose client gave this name.

        :param name: the connection's name.
        """
        # The tab-separated listing keeps the full pid (node included), which
        # close_connection needs; the JSON one does not.
        listing = self.run("list_connections", "pid", "client_properties", "-q")
        marker = f'{{"connection_name","{name}"}}'
        return [
            line.split("\t", 1)[0]
            for line in listing.splitlines()
            if "\t" in line and marker in line.split("\t", 1)[1]
        ]

    def close_connections_named(self, name: str, reason: str = "closed by the test") -> int:
        """Close, as an operator would, every connection with this client-given name.

        :param name: the connection's name (the ``name`` URL option of the client).
        :param reason: the reason the broker gives the client.
        :returns: how many connections were closed.
        """
        pids = self.connections_named(name)
        for pid in pids:
            self.run("close_connection", pid, reason)
        return len(pids)


class ManagementAPIAdmin(BrokerAdmin):
    """Administration through the management plugin's HTTP API.

    :param api_url: the management base URL, e.g. ``http://127.0.0.1:15672``.
    :param login: a user with the ``administrator`` tag.
    :param password: its password.
    :param timeout: seconds any one request may take.
    """

    method = "management HTTP API"

    def __init__(self, api_url: str, login: str, password: str, timeout: float = 10) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One API call; the decoded JSON answer (None if empty), or BrokerAdminError.

        :param method: ``GET``, ``PUT``, ``DELETE``...
        :param path: the path under ``/api``, its parts already quoted.
        :param body: sent as JSON if not None.
        :param headers: extra headers.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api_url}/api/{path}", data=data, method=method)
        request.add_header("Authorization", self._authorization)
        request.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise BrokerAdminError(f"{method} {request.full_url}: {error.code} {detail}") from error
        except (OSError, ValueError) as error:
            raise BrokerAdminError(f"{method} {request.full_url}: {error}") from error
        return json.loads(payload) if payload.strip() else None

    def check(self) -> None:
        """Raise :class:`BrokerAdminError` unless the API answers."""
        self.request("GET", "whoami")

    def add_vhost(self, vhost: str, user: str) -> None:
        """Create a virtual host and give ``user`` every permission on it.

        :param vhost: the new virtual host's name.
        :param user: the user the tests connect as.
        """
        self.request("PUT", f"vhosts/{quote(vhost, safe='')}")
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        self.request(
            "PUT", f"permissions/{quote(vhost, safe='')}/{quote(user, safe='')}", permissions
        )

    def delete_vhost(self, vhost: str) -> None:
        """Delete a virtual host with everything in it.

        :param vhost: the virtual host's name.
        """
        self.request("DELETE", f"vhosts/{quote(vhost, safe='')}")

    def close_connections_named(self, name: str, reason: str = "closed by the test") -> int:
        """Close, as an operator would, every connection with this client-given name.

        :param name: the connection's name (the ``name`` URL option of the client).
        :param reason: the reason the broker gives the client.
        :returns: how many connections were closed.
        """
        listing = self.request("GET", "connections?columns=name,client_properties") or []
        closed = 0
        for connection in listing:
            properties = connection.get("client_properties") or {}
            if properties.get("connection_name") == name:
                path = f"connections/{quote(connection['name'], safe='')}"
                self.request("DELETE", path, headers={"X-Reason": reason})
                closed += 1
        return closed


def find_broker_admin(broker_url: str, management_url: str | None = None) -> BrokerAdmin:
    """A working way to administer the broker of ``broker_url``; BrokerAdminError if none.

    ``rabbitmqctl`` is tried first when it is on the PATH and the broker runs on
    this machine, then the management HTTP API (``management_url``, else
    ``$AMQPFAST_TEST_MANAGEMENT_URL``, else ``http://<broker host>:15672``) with
    the broker URL's credentials.

    :param broker_url: the ``amqp://`` URL the tests connect to.
    :param management_url: the management plugin's base URL.
    """
    host = urlsplit(broker_url).hostname or "127.0.0.1"
    problems: list[str] = []
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        problems.append("rabbitmqctl is not on the PATH")
    elif host not in _LOCAL_HOSTS | {socket.gethostname()}:
        problems.append(f"rabbitmqctl not used: the broker ({host}) is not on this machine")
    else:
        ctl = RabbitmqctlAdmin(executable)
        try:
            ctl.check()
        except BrokerAdminError as error:
            problems.append(str(error))
        else:
            return ctl
    api_url = (
        management_url
        or os.environ.get("AMQPFAST_TEST_MANAGEMENT_URL")
        or f"http://{host if ':' not in host else f'[{host}]'}:15672"
    )
    login, password = _credentials(broker_url)
    api = ManagementAPIAdmin(api_url, login, password)
    try:
        api.check()
    except BrokerAdminError as error:
        problems.append(f"management API: {error}")
    else:
        return api
    raise BrokerAdminError("cannot administer the broker: " + "; ".join(problems))
