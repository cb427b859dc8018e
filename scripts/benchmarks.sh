#!/usr/bin/env bash
# Every benchmark table in one run, one after another on the same machine:
# the low-level API against aiormq and aio-pika, the aio-pika API against
# aio-pika, Node's amqplib beside the aio-pika API, request/reply (RPC) against
# its floor, and the instructions per message of the guard. The tables go to
# stdout and to benchmarks/runs/<date>-<commit>.txt (not tracked), with the
# commit and the machine at the top, so that a table quoted in CLIENTS.md or
# the docs names the run it comes from.
#
#   bash scripts/benchmarks.sh              # all of it (about 25 minutes)
#   AMQPFAST_BENCH_ROUNDS=1 AMQPFAST_BENCH_MESSAGES=5000 bash scripts/benchmarks.sh   # a quick look
#
# Needs the broker (scripts/broker.sh starts it) and the venv (scripts/setup.sh);
# Node's amqplib is installed from the npm registry on first use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=.venv/bin/python

mkdir -p benchmarks/runs
OUT="benchmarks/runs/$(date -u +%Y%m%dT%H%M)-$(git rev-parse --short HEAD).txt"

{
    echo "amqpfast $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- amqpfast || echo ' (with uncommitted changes)'), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $("$PY" --version); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rounds ${AMQPFAST_BENCH_ROUNDS:-3}, messages ${AMQPFAST_BENCH_MESSAGES:-20000}"
    for part in \
        "low-level API: amqpfast.core vs aiormq vs aio-pika|benchmarks/client_runners.py" \
        "aio-pika API: amqpfast vs aio-pika, the same code|benchmarks/api_runners.py" \
        "Node amqplib beside amqpfast's aio-pika API|benchmarks/amqplib_runner.py" \
        "request/reply: RPC against the thinnest loop|benchmarks/rpc_runners.py" \
        "instructions per message (the guard)|benchmarks/instructions.py"; do
        title="${part%%|*}"
        script="${part##*|}"
        echo
        echo "## $title ($script)"
        start=$SECONDS
        # the progress lines go to stderr, the table to stdout
        "$PY" "$script"
        echo "($((SECONDS - start)) s)"
    done
} | tee "$OUT"
echo "written: $OUT" >&2
