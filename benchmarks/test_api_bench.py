"""API benchmarks: amqpfast's aio-pika-style API against aio-pika, the same code for both.

Every scenario of api_runners.py runs with ``lib=amqpfast`` and ``lib=aio_pika``
on asyncio's own loop and on uvloop, against the real broker and the fake one,
a few rounds each (AMQPFAST_BENCH_ROUNDS, default 3). pytest-benchmark times
the measured phase; the table printed at the end gives the client's CPU per
message (median round) and the ratio aio-pika / amqpfast. See the
"aio-pika's API" section of CLIENTS.md for a recorded run.

.venv/bin/python -m pytest benchmarks/test_api_bench.py
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import yarl
from api_runners import API_SCENARIOS, LIBS, ApiRounds, Results, table
from client_runners import LOOPS, Settings, fake_broker

SETTINGS = Settings()


class _TablePlugin:
    """Prints the side-by-side table once all the cases ran."""

    def __init__(self) -> None:
        self.results: Results = {}

    @pytest.hookimpl(trylast=True)  # below pytest-benchmark's timing tables
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        terminalreporter.section("amqpfast's aio-pika API vs aio-pika: client CPU per message")
        for line in table(self.results, SETTINGS):
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def api_results(request: pytest.FixtureRequest) -> Results:
    # registered from here, not from conftest.py, which belongs to the codec benchmarks
    plugin = _TablePlugin()
    request.config.pluginmanager.register(plugin, "amqpfast-api-table")
    return plugin.results


@pytest.fixture(scope="session")
def api_broker_url() -> str:
    url = yarl.URL(SETTINGS.url)
    try:
        socket.create_connection((url.host or "127.0.0.1", url.port or 5672), timeout=2).close()
    except OSError as error:
        pytest.skip(f"no broker at {url.with_password('***')}: {error}")
    return SETTINGS.url


@pytest.fixture(scope="session")
def api_fake_url() -> Iterator[str]:
    with fake_broker(SETTINGS) as broker:
        yield broker.url


def _id(name: str) -> str:
    return name.replace(" ", "-")


@pytest.mark.parametrize("lib", list(LIBS))
@pytest.mark.parametrize("scenario", list(API_SCENARIOS), ids=_id)
@pytest.mark.parametrize("loop", list(LOOPS))
def test_api(
    benchmark: Any,
    api_results: Results,
    request: pytest.FixtureRequest,
    loop: str,
    scenario: str,
    lib: str,
) -> None:
    fake = API_SCENARIOS[scenario].fake
    url = request.getfixturevalue("api_fake_url" if fake else "api_broker_url")
    benchmark.group = f"api {scenario} on {loop}"
    rounds = ApiRounds(scenario, lib, loop, SETTINGS, url)
    try:
        benchmark.pedantic(
            rounds.measure, setup=rounds.setup, teardown=rounds.teardown, rounds=SETTINGS.rounds
        )
    finally:
        rounds.teardown()  # pedantic skips it when benchmarking is disabled
    measured = rounds.result
    api_results[(scenario, loop, lib)] = measured
    benchmark.extra_info.update(
        messages=measured.messages,
        messages_per_second=round(measured.rate),
        cpu_us_per_message=round(measured.cpu_us, 3),
        cpu_us_per_message_rounds=[round(m.cpu_us, 3) for m in rounds.measurements],
        cpu_seconds=measured.cpu,
        wall_seconds=measured.wall,
    )
