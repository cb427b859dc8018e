#!/usr/bin/env bash
# THE test command (CI runs it through .ci/run): installs, starts the broker,
# then lint, format check, types, the whole test suite on the compiled codec,
# and the codec tests again on the pure-Python twin. Every step runs even if
# an earlier one failed, so one run shows all problems; any failure (pytest's
# exit 5, "no tests collected", included) makes the script exit non-zero.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUMMARY=()
FAILED=0

# step NAME COMMAND...: runs one step, timed, and records how it went.
step() {
    local name="$1"
    shift
    echo
    echo "==> [$name] $*"
    local start=$SECONDS rc=0
    "$@" || rc=$?
    local took=$((SECONDS - start))
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("$(printf '  %-22s ok      %4ds' "$name" "$took")")
    else
        local why="exit $rc"
        # pytest's 5: nothing was collected, which must not pass for green.
        if [ "$rc" -eq 5 ] && [[ "$name" == pytest* ]]; then why="exit 5: no tests ran"; fi
        SUMMARY+=("$(printf '  %-22s FAILED  %4ds  (%s)' "$name" "$took" "$why")")
        FAILED=1
    fi
    return "$rc"
}

summary() {
    echo
    echo "==> summary (total ${SECONDS}s)"
    printf '%s\n' "${SUMMARY[@]}"
}

# Without the environment nothing else can run: stop at once.
if ! step setup bash scripts/setup.sh; then summary; exit 1; fi
step broker bash scripts/broker.sh || true

# shellcheck source=/dev/null
source .venv/bin/activate
# The suite runs on the compiled codec unless a step asks otherwise.
unset AMQPFAST_NO_EXTENSIONS

lint_paths=()
for path in amqpfast tests benchmarks examples scripts docs setup.py; do
    if [ -e "$path" ]; then lint_paths+=("$path"); fi
done

step "ruff check" ruff check "${lint_paths[@]}" || true
step "ruff format" ruff format --check "${lint_paths[@]}" || true
# mypy's own file list (pyproject.toml) is the package; the example is checked too.
step mypy mypy || true
step "mypy examples" mypy examples || true

# The suite in two processes side by side (two cores; most of a broker test
# is waiting): the tests that boot RabbitMQ nodes of their own (marked
# "nodes") and the soak and fuzz tests ("slow"), then the codec tests again on
# the pure-Python twin, in a side lane whose output and summary lines follow
# the main lane's.
LANE="$(mktemp -d "${TMPDIR:-/tmp}/amqpfast-test-lane.XXXXXX")"
trap 'rm -rf "$LANE"' EXIT
(
    SUMMARY=()
    FAILED=0
    step "pytest (nodes, slow)" python -m pytest -m "nodes or slow" -p no:cacheprovider \
        --durations=5 || true
    # -rfEX: here every compiled-codec test is skipped on purpose; do not list them.
    step "pytest codec (python)" env AMQPFAST_NO_EXTENSIONS=1 \
        python -m pytest tests -k codec -p no:cacheprovider -rfEX --durations=5 || true
    printf '%s\n' "${SUMMARY[@]}" >"$LANE/summary"
    echo "$FAILED" >"$LANE/failed"
) >"$LANE/log" 2>&1 &
SIDE_LANE=$!
step "pytest" python -m pytest -m "not (nodes or slow)" --durations=10 || true
wait "$SIDE_LANE" || true
echo
echo "==> the side lane's output"
cat "$LANE/log"
if [ -f "$LANE/summary" ]; then
    while IFS= read -r line; do SUMMARY+=("$line  (beside pytest)"); done <"$LANE/summary"
    if [ "$(cat "$LANE/failed")" != 0 ]; then FAILED=1; fi
else
    SUMMARY+=("  side lane             FAILED  (no summary)")
    FAILED=1
fi

# The performance guard: instructions per message of the main scenarios
# (valgrind), more than 10 % over benchmarks/instructions.json fails.
step instructions bash scripts/instructions.sh || true

# aio-pika's own test suite (fetched at run time) against amqpfast: fails on
# any failure that is neither a deliberate difference nor a known one
# (scripts/aio_pika_suite/expected.txt, known_failures.txt).
step "aio-pika suite" bash scripts/aio_pika_suite.sh || true

# The documentation builds with warnings as errors.
step docs bash scripts/docs.sh || true
# A wheel for every supported CPython found here (3.11-3.13) and the pure-Python
# wheel, each installed into a fresh virtual environment: the codec tests and a
# smoke test in each, the callback-runner and API tests on the interpreters
# other than this one (whose whole suite ran above); twine check, cibuildwheel.
step package bash scripts/package.sh --api-tests || true

summary
exit "$FAILED"
