#!/usr/bin/env bash
# Creates (or refreshes) .venv in the repo root with the dev requirements and
# amqpfast installed editable, the compiled codec built in place.
# Idempotent: safe to run again; a second run only checks and rebuilds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

log() { printf '==> %s\n' "$*"; }

APT_UPDATED=0
apt_install() {
    # Only as a fallback on Debian/Ubuntu; the update is done once per run.
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup.sh: missing $*, and no apt-get to install it with" >&2
        return 1
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        "${sudo[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    apt_install python3
fi

# A venv that was copied from elsewhere or whose interpreter is gone is rebuilt.
if [ -x "$VENV/bin/python" ] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    log "broken .venv, recreating it"
    "$PYTHON" -m venv --clear "$VENV"
fi

if [ ! -x "$VENV/bin/python" ]; then
    # Debian's own python3 ships venv/ensurepip separately (python3-venv).
    if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    log "creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# A C compiler and Python.h are needed to build the compiled codec.
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    apt_install gcc libc6-dev
fi
if ! "$PY" -c 'import os, sysconfig
raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
then
    apt_install python3-dev
fi

log "installing requirements-dev.txt into .venv"
"$PY" -m pip install -q --upgrade pip
"$PY" -m pip install -q -r requirements-dev.txt

# The extension is always built here, whatever the caller's environment says;
# AMQPFAST_NO_EXTENSIONS only chooses the implementation at import time.
unset AMQPFAST_NO_EXTENSIONS

if [ -f amqpfast/_codec.pyx ]; then
    log "building the compiled codec in place"
    # Quiet on success, the whole compiler output on failure.
    build_log="$(mktemp)"
    trap 'rm -f "$build_log"' EXIT
    if ! "$PY" setup.py -q build_ext --inplace >"$build_log" 2>&1; then
        cat "$build_log" >&2
        echo "setup.sh: building amqpfast/_codec.pyx failed" >&2
        exit 1
    fi
else
    echo "setup.sh: amqpfast/_codec.pyx is missing: only the pure-Python codec is available" >&2
fi

log "installing amqpfast editable"
# The editable install points .venv at the source tree, where the extension was
# just built, so it is told not to compile the codec a second time. No build
# isolation: it uses the setuptools just installed instead of downloading one.
AMQPFAST_NO_EXTENSIONS=1 "$PY" -m pip install -q --no-build-isolation --no-deps -e .

impl="$(cd /tmp && "$PY" -c 'import amqpfast.codec as c; print(c.IMPLEMENTATION)')"
if [ -f amqpfast/_codec.pyx ] && [ "$impl" != "c" ]; then
    echo "setup.sh: the compiled codec was built but does not import ('$impl' codec active)" >&2
    (cd /tmp && "$PY" -c 'import amqpfast._codec') || true
    exit 1
fi
log "ready: .venv, amqpfast $("$PY" -c 'import amqpfast; print(amqpfast.__version__)'), $impl codec"
