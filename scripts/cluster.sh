#!/usr/bin/env bash
# A private 3-node RabbitMQ cluster of this machine's installation, for
# trying amqpfast against several nodes. Never touches the shared broker:
# its nodes have their own names (amqpfast-c<hex>-<n>@localhost), ports,
# Erlang cookie, data and logs (under a temporary directory), and are killed
# by their own pids.
#   bash scripts/cluster.sh up        boot it; prints each node and the boot time
#   bash scripts/cluster.sh status    one line per node: name, pid, amqp:// URL
#   bash scripts/cluster.sh down      kill the nodes, remove their directory
# Where it lives is recorded in .cluster/cluster.json (AMQPFAST_CLUSTER_STATE
# or --state FILE: another file); more options: up --size N --timeout S.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "$#" -lt 1 ]; then
    echo "usage: $0 up|status|down [--state FILE] [--size N] [--timeout SECONDS]" >&2
    exit 2
fi

# On a fresh machine, up installs what it needs first: the project's venv and
# Debian's rabbitmq-server package (no node of it is started).
if [ "$1" = "up" ]; then
    if [ ! -x .venv/bin/python ]; then bash scripts/setup.sh; fi
    bash scripts/broker.sh --install-only
fi
if [ -x .venv/bin/python ]; then
    PYTHON=.venv/bin/python
else
    PYTHON=python3
fi

export AMQPFAST_CLUSTER_STATE="${AMQPFAST_CLUSTER_STATE:-$ROOT/.cluster/cluster.json}"
exec "$PYTHON" -m amqpfast.testing.cluster "$@"
