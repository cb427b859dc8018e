#!/usr/bin/env bash
# aio-pika's own test suite, run against amqpfast (aio_pika -> amqpfast through
# amqpfast.compat.install()), on uvloop, against the local broker in a vhost of
# its own, with a private RabbitMQ node for the tests that kill, restart or
# need TLS. Nothing of aio-pika is committed: its sdist is fetched at run time.
#
#   bash scripts/aio_pika_suite.sh                      # everything
#   bash scripts/aio_pika_suite.sh tests/test_amqp.py   # one file
#   bash scripts/aio_pika_suite.sh -k test_message      # tests whose id contains it
#   bash scripts/aio_pika_suite.sh --target upstream    # the real aio-pika, as a reference
#   bash scripts/aio_pika_suite.sh --suite aiormq       # aiormq 7.2.4's tests on amqpfast's aiormq face
#
# Exits non-zero when a test fails that is not an expected difference
# (scripts/aio_pika_suite/expected.txt, explained in docs/src/migration.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# The project's environment (compiled codec built in place) and the broker.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import amqpfast' 2>/dev/null; then
    bash scripts/setup.sh
fi
bash scripts/broker.sh >/dev/null

# A separate environment for the suite: its pytest plugins (aiomisc's) must
# not meet the project's own test setup. amqpfast comes from this checkout.
SUITE_VENV="$ROOT/.suite/venv"
REQS="scripts/aio_pika_suite/requirements.txt"
if [ ! -x "$SUITE_VENV/bin/python" ] || ! cmp -s "$REQS" "$SUITE_VENV/requirements.txt"; then
    echo "==> preparing $SUITE_VENV"
    mkdir -p "$ROOT/.suite"
    "$ROOT/.venv/bin/python" -c 'import sys; print(sys.base_prefix)' >/dev/null
    PYTHON="$(.venv/bin/python -c 'import sys, os; print(os.path.realpath(sys._base_executable))')"
    "$PYTHON" -m venv --clear "$SUITE_VENV"
    "$SUITE_VENV/bin/pip" install -q -r "$REQS" >"$ROOT/.suite/pip.log" 2>&1 || { cat "$ROOT/.suite/pip.log"; exit 1; }
    cp "$REQS" "$SUITE_VENV/requirements.txt"
fi
SITE="$("$SUITE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT" >"$SITE/amqpfast-checkout.pth"

exec "$SUITE_VENV/bin/python" scripts/aio_pika_suite/runner.py "$@"
