"""Client benchmarks: amqpfast's low-level API, aiormq and aio-pika side by side.

Every scenario runs for every client on asyncio's own loop and on uvloop, a
few rounds each (AMQPFAST_BENCH_ROUNDS, default 3; a round moves tens of
thousands of messages). pytest-benchmark times the measured phase; the table
printed at the end of the run gives what matters more: the client's CPU per
message (median round) and the ratios to amqpfast. See client_runners.py for
the scenarios and CLIENTS.md for a recorded run.

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
    Results,
    Rounds,
    Settings,
    fake_broker,
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
    rounds = Rounds(scenario, client, loop, SETTINGS, url)
    try:
        benchmark.pedantic(
            rounds.measure, setup=rounds.setup, teardown=rounds.teardown, rounds=SETTINGS.rounds
        )
    finally:
        rounds.teardown()  # pedantic skips it when benchmarking is disabled
    measured = rounds.result
    client_results[(scenario, loop, client)] = measured
    benchmark.extra_info.update(
        messages=measured.messages,
        messages_per_second=round(measured.rate),
        cpu_us_per_message=round(measured.cpu_us, 3),
        cpu_us_per_message_rounds=[round(m.cpu_us, 3) for m in rounds.measurements],
        cpu_seconds=measured.cpu,
        wall_seconds=measured.wall,
    )
