"""Client benchmarks: amqpfast's low-level API, aiormq and aio-pika side by side.

Every scenario runs for every client on asyncio's own loop and on uvloop, once
(a round moves tens of thousands of messages). pytest-benchmark times the
measured phase; the table printed at the end of the run gives what matters
more: the client's CPU per message and the ratios to amqpfast. See
client_runners.py for the scenarios and CLIENTS.md for a recorded run.

.venv/bin/python -m pytest benchmarks/test_client_bench.py
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import yarl
from client_runners import (
    CLIENTS,
    LOOPS,
    SCENARIOS,
    Measurement,
    Results,
    Settings,
    fake_broker,
    run_case,
    table,
)

SETTINGS = Settings()


class _TablePlugin:
    """Prints the side-by-side table once all the cases ran."""

    def __init__(self) -> None:
        self.results: Results = {}

    @pytest.hookimpl(trylast=True)  # below pytest-benchmark's timing tables
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        terminalreporter.section("amqpfast vs aiormq vs aio-pika: client CPU per message")
        for line in table(self.results, SETTINGS):
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def client_results(request: pytest.FixtureRequest) -> Results:
    # registered from here, not from conftest.py, which belongs to the codec benchmarks
    plugin = _TablePlugin()
    request.config.pluginmanager.register(plugin, "amqpfast-client-table")
    return plugin.results


@pytest.fixture(scope="session")
def broker_url() -> str:
    url = yarl.URL(SETTINGS.url)
    try:
        socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=2).close()
    except OSError as error:
        pytest.skip(f"no broker at {url.with_password('***')}: {error}")
    return SETTINGS.url


@pytest.fixture(scope="session")
def fake_url() -> Iterator[str]:
    with fake_broker(SETTINGS) as broker:
        yield broker.url


def _id(name: str) -> str:
    return name.replace(" ", "-")


@pytest.mark.parametrize("client", list(CLIENTS))
@pytest.mark.parametrize("scenario", list(SCENARIOS), ids=_id)
@pytest.mark.parametrize("loop", list(LOOPS))
def test_client(
    benchmark: Any,
    client_results: Results,
    request: pytest.FixtureRequest,
    loop: str,
    scenario: str,
    client: str,
) -> None:
    fake = SCENARIOS[scenario].fake
    url = request.getfixturevalue("fake_url" if fake else "broker_url")
    benchmark.group = f"{scenario} on {loop}"

    def timed(measure: Any) -> Measurement:
        return benchmark.pedantic(measure, rounds=1, iterations=1)

    measured = run_case(scenario, client, loop, SETTINGS, url, timed)
    client_results[(scenario, loop, client)] = measured
    benchmark.extra_info.update(
        messages=measured.messages,
        messages_per_second=round(measured.rate),
        cpu_us_per_message=round(measured.cpu_us, 3),
        cpu_seconds=measured.cpu,
        wall_seconds=measured.wall,
    )
