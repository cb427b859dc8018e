#!/usr/bin/env bash
# The main job: installs what is needed, makes sure RabbitMQ runs, then runs
# `amqpfast bench` against it: publish and consume 100 000 messages, on the
# default event loop and on uvloop. Extra arguments go to the bench command
# (e.g. --count 1000000 --size 1024 --confirm); AMQP_URL picks another broker.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
bash scripts/broker.sh
echo "==> amqpfast bench (asyncio)"
.venv/bin/amqpfast bench "$@"
echo "==> amqpfast bench (uvloop)"
.venv/bin/amqpfast --uvloop bench "$@"
