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

from typing import Any

import pytest
from client_runners import Rounds, Settings, table
from harness import Bench

BENCH = Bench(
    settings=Settings(),
    rounds=Rounds,
    title="amqpfast vs aiormq vs aio-pika: client CPU per message",
    table=table,
    plugin="amqpfast-client-table",
    results_fixture="client_results",
    broker_fixture="broker_url",
    fake_fixture="fake_url",
)
client_results, broker_url, fake_url = BENCH.fixtures()


@BENCH.parametrize("client")
def test_client(
    benchmark: Any, request: pytest.FixtureRequest, loop: str, scenario: str, client: str
) -> None:
    BENCH.run(benchmark, request, loop, scenario, client)
