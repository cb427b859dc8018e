"""Stands in for aio-pika's Docker client: "containers" are the run's private node.

aio-pika's recovery tests kill, start, inspect and ``docker exec rabbitmqctl``
their broker container through a small Docker API client. Here every
container is the private RabbitMQ node the runner booted
(``AMQPFAST_SUITE_NODE``, see ``amqpfast.testing.node``): ``kill`` SIGKILLs it,
``start`` boots it again with its data, ``remove`` resets it to a new node's
state, and an exec runs ``rabbitmqctl -n <node>``. The shared broker is never
touched.
"""

import itertools
import os
from dataclasses import dataclass
from functools import cache

from amqpfast.testing.node import NodeError, RabbitNode


@cache
def private_node() -> RabbitNode:
    return RabbitNode.attach(os.environ["AMQPFAST_SUITE_NODE"])


@dataclass
class ContainerInfo:
    id: str
    ports: dict[str, int]
    host: str

    @classmethod
    def of(cls, node: RabbitNode) -> "ContainerInfo":
        return cls(node.node, _ports(node), "127.0.0.1")


def _ports(node: RabbitNode) -> dict[str, int]:
    ports = {"5672/tcp": node.port}
    if node.tls_port is not None:
        ports["5671/tcp"] = node.tls_port
    return ports


class DockerClient:
    """The calls aio-pika's tests make, on the private node."""

    def __init__(self, docker_host_info=None):
        self._execs: dict[str, dict] = {}
        self._exec_ids = itertools.count(1)

    def _node(self, container_id: str) -> RabbitNode:
        node = private_node()
        if container_id != node.node:
            raise NodeError(f"no such container: {container_id}")
        return node

    def kill(self, container_id: str) -> None:
        self._node(container_id).kill()

    def stop(self, container_id: str, timeout: int = 10) -> None:
        self._node(container_id).stop(timeout)

    def start(self, container_id: str) -> None:
        self._node(container_id).start()

    def remove(self, container_id: str) -> None:
        self._node(container_id).reset()

    def inspect(self, container_id: str) -> dict:
        node = self._node(container_id)
        return {"Id": node.node, "State": {"Running": node.running()}, "ports": _ports(node)}

    def _parse_ports(self, info: dict) -> dict[str, int]:
        return dict(info["ports"])

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        # Only `docker exec` of rabbitmqctl: create, start, poll.
        parts = path.strip("/").split("/")
        if method == "POST" and parts[0] == "containers" and parts[2] == "exec":
            command = body["Cmd"]
            if command[0] != "rabbitmqctl":
                raise NodeError(f"only rabbitmqctl runs here, not {command[0]}")
            exec_id = str(next(self._exec_ids))
            self._execs[exec_id] = {"node": self._node(parts[1]), "args": command[1:]}
            return {"Id": exec_id}
        if method == "POST" and parts[0] == "exec" and parts[2] == "start":
            job = self._execs[parts[1]]
            try:
                job["node"].rabbitmqctl(*job["args"])
                job["code"] = 0
            except NodeError:
                job["code"] = 1
            return {}
        if method == "GET" and parts[0] == "exec" and parts[2] == "json":
            return {"Running": False, "ExitCode": self._execs[parts[1]]["code"]}
        raise NodeError(f"unsupported Docker API call: {method} {path}")
