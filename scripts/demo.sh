#!/usr/bin/env bash
# The demo: installs what is needed, makes sure RabbitMQ runs, then has the
# codec talk AMQP to it over a plain socket (examples/codec_demo.py).
# Extra arguments go to the demo (e.g. another amqp:// URL).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
bash scripts/broker.sh
echo "==> examples/codec_demo.py"
exec .venv/bin/python examples/codec_demo.py "$@"
