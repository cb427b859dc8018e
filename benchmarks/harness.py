"""The pytest side that test_client_bench.py and test_api_bench.py share.

Each of them describes its benchmark with a :class:`Bench` (the scenarios, what
runs them, the table and its title) and gets from it the session fixtures and
the body of its one parametrized test: the broker's check, the fake broker,
pytest-benchmark driving the rounds and the side-by-side table printed once
all the cases ran. The table is registered from here, not from conftest.py,
which belongs to the codec benchmarks.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yarl
from client_runners import LOOPS, Results, Rounds, Settings, fake_broker


class _TablePlugin:
    """Prints the side-by-side table once all the cases ran."""

    def __init__(
        self, title: str, table: Callable[[Results, Settings], list[str]], settings: Settings
    ):
        self.title = title
        self.table = table
        self.settings = settings
        self.results: Results = {}

    @pytest.hookimpl(trylast=True)  # below pytest-benchmark's timing tables
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        terminalreporter.section(self.title)
        for line in self.table(self.results, self.settings):
            terminalreporter.write_line(line)


def scenario_id(name: str) -> str:
    return name.replace(" ", "-")


@dataclass(frozen=True)
class Bench:
    """One side-by-side benchmark: its scenarios, its rounds, its table and fixture names."""

    settings: Settings
    rounds: type[Rounds]  # its scenarios and clients (or libraries) by name
    title: str  # of the table's section
    table: Callable[[Results, Settings], list[str]]
    plugin: str  # the name the table's plugin is registered under
    results_fixture: str
    broker_fixture: str
    fake_fixture: str
    group: str = ""  # before "<scenario> on <loop>" in pytest-benchmark's groups

    def fixtures(self) -> tuple[Any, Any, Any]:
        """The session fixtures: the results table, the broker's URL, the fake broker's URL."""
        settings = self.settings

        @pytest.fixture(scope="session", name=self.results_fixture)
        def results(request: pytest.FixtureRequest) -> Results:
            plugin = _TablePlugin(self.title, self.table, settings)
            request.config.pluginmanager.register(plugin, self.plugin)
            return plugin.results

        @pytest.fixture(scope="session", name=self.broker_fixture)
        def broker_url() -> str:
            url = yarl.URL(settings.url)
            try:
                address = (url.host or "127.0.0.1", url.port or 5672)
                socket.create_connection(address, timeout=2).close()
            except OSError as error:
                pytest.skip(f"no broker at {url.with_password('***')}: {error}")
            return settings.url

        @pytest.fixture(scope="session", name=self.fake_fixture)
        def fake_url() -> Iterator[str]:
            with fake_broker(settings) as broker:
                yield broker.url

        return results, broker_url, fake_url

    def parametrize(self, member: str) -> Callable[[Any], Any]:
        """Every loop x scenario x ``member`` (the argument naming a client or library)."""

        def decorate(test: Any) -> Any:
            # in the order of stacked decorators read bottom-up: ids are loop-scenario-member
            test = pytest.mark.parametrize("loop", list(LOOPS))(test)
            test = pytest.mark.parametrize(
                "scenario", list(self.rounds.scenarios), ids=scenario_id
            )(test)
            return pytest.mark.parametrize(member, list(self.rounds.clients))(test)

        return decorate

    def run(
        self, benchmark: Any, request: pytest.FixtureRequest, loop: str, scenario: str, member: str
    ) -> None:
        """One case: its rounds under pytest-benchmark, into the table and the extra info."""
        results: Results = request.getfixturevalue(self.results_fixture)
        fake = self.rounds.scenarios[scenario].fake
        url = request.getfixturevalue(self.fake_fixture if fake else self.broker_fixture)
        benchmark.group = f"{self.group}{scenario} on {loop}"
        settings = self.settings
        rounds = self.rounds(scenario, member, loop, settings, url)
        try:
            benchmark.pedantic(
                rounds.measure, setup=rounds.setup, teardown=rounds.teardown, rounds=settings.rounds
            )
        finally:
            rounds.teardown()  # pedantic skips it when benchmarking is disabled
        measured = rounds.result
        results[(scenario, loop, member)] = measured
        benchmark.extra_info.update(
            messages=measured.messages,
            messages_per_second=round(measured.rate),
            cpu_us_per_message=round(measured.cpu_us, 3),
            cpu_us_per_message_rounds=[round(m.cpu_us, 3) for m in rounds.measurements],
            cpu_seconds=measured.cpu,
            wall_seconds=measured.wall,
        )
