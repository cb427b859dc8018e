#!/usr/bin/env bash
# The performance guard (benchmarks/instructions.py): instructions per message
# of the main scenarios, counted with valgrind against the fake broker (and
# the local broker for RPC), compared with benchmarks/instructions.json.
# Fails when a scenario costs more than 10 % over its record.
#   bash scripts/instructions.sh            check
#   bash scripts/instructions.sh --record   write the counts as the new record
# Installs Debian's valgrind package when it is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then bash scripts/setup.sh; fi
if ! command -v valgrind >/dev/null 2>&1; then
    echo "==> installing valgrind (Debian package)"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
if [ "$#" -eq 0 ]; then set -- --check; fi
exec .venv/bin/python benchmarks/instructions.py "$@"
