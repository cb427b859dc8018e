"""The part of the upstream-suite setup that every suite shares (loaded with -p).

- ``aio_pika`` and ``aiormq`` resolve to amqpfast (``amqpfast.compat.install()``)
  unless ``AMQPFAST_SUITE_TARGET=upstream``, before any test module imports them;
- fixtures for the brokers: ``amqp_direct_url`` (``AMQPFAST_SUITE_URL``), and the
  run's private node (``AMQPFAST_SUITE_NODE``) as aio-pika's and aiormq's
  ``rabbitmq_container`` and ``docker`` (see docker_client.py);
- each test's outcome, appended to ``AMQPFAST_SUITE_RESULTS`` as it ends, so the
  runner knows how far a process got if it had to kill it.
"""

import json
import os

if os.environ.get("AMQPFAST_SUITE_TARGET", "amqpfast") == "amqpfast":
    import amqpfast.compat

    amqpfast.compat.install()

import pytest
from docker_client import ContainerInfo, private_node
from yarl import URL


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get("AMQPFAST_SUITE_RESULTS")
    if not path:
        return
    if report.when != "call" and report.outcome == "passed":
        return  # setup and teardown that went well say nothing new
    line = {"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome}
    if report.failed:  # the end of the traceback, for the runner's --explain
        line["why"] = report.longreprtext[-30000:]
    with open(path, "a") as results:
        results.write(json.dumps(line) + "\n")


@pytest.fixture(scope="session")
def docker():
    """Starts "containers": every one is the run's private node."""

    def run(image, ports, environment=None):
        node = private_node()
        node.start()
        return ContainerInfo.of(node)

    return run


@pytest.fixture(scope="session")
def rabbitmq_container():
    node = private_node()
    node.start()
    return ContainerInfo.of(node)


@pytest.fixture(scope="session")
def amqp_direct_url() -> URL:
    return URL(os.environ["AMQPFAST_SUITE_URL"])
