#!/usr/bin/env bash
# The full failover drill (tests/failover_drill.py) on a private 3-node
# cluster: 20,000 confirmed persistent messages into a quorum queue and a
# consumer, five SIGKILLs of the node holding the publisher's connection (each
# restarted), one of the queue's leader; on asyncio, then on uvloop. Prints
# one JSON line of figures per loop (RELIABILITY.md records a run) and exits
# non-zero if a confirmed message was lost or left in the queue.
#   bash scripts/failover.sh [--messages N] [--kills K]
# Uses the cluster of scripts/cluster.sh up when one is up; else boots one for
# the run and takes it down afterwards. Takes about two minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then bash scripts/setup.sh; fi

export AMQPFAST_CLUSTER_STATE="${AMQPFAST_CLUSTER_STATE:-$ROOT/.cluster/cluster.json}"
booted=0
if ! bash scripts/cluster.sh status > /dev/null 2>&1; then
    bash scripts/cluster.sh up
    booted=1
fi
cleanup() { if [ "$booted" -eq 1 ]; then bash scripts/cluster.sh down; fi; }
trap cleanup EXIT

status=0
for loop in asyncio uvloop; do
    .venv/bin/python tests/failover_drill.py --loop "$loop" "$@" || status=1
done
exit "$status"
