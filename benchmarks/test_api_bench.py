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

from typing import Any

import pytest
from api_runners import ApiRounds, table
from client_runners import Settings
from harness import Bench

BENCH = Bench(
    settings=Settings(),
    rounds=ApiRounds,
    title="amqpfast's aio-pika API vs aio-pika: client CPU per message",
    table=table,
    plugin="amqpfast-api-table",
    results_fixture="api_results",
    broker_fixture="api_broker_url",
    fake_fixture="api_fake_url",
    group="api ",
)
api_results, api_broker_url, api_fake_url = BENCH.fixtures()


@BENCH.parametrize("lib")
def test_api(
    benchmark: Any, request: pytest.FixtureRequest, loop: str, scenario: str, lib: str
) -> None:
    BENCH.run(benchmark, request, loop, scenario, lib)
