"""Which codec runs, and that amqpfast says so: a debug log line once, and --version.

Each case in a fresh interpreter: the choice is made when amqpfast is imported.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

LOG_IMPORT = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format='%(name)s|%(message)s')\n"
    "{before}"
    "import amqpfast, amqpfast.codec\n"
    "import amqpfast.core, amqpfast.patterns  # more imports: still one line\n"
    "print('active', amqpfast.codec.IMPLEMENTATION)\n"
)


def _python(code: str, no_extensions: bool) -> list[str]:
    environment = dict(os.environ)
    environment.pop("AMQPFAST_NO_EXTENSIONS", None)
    if no_extensions:
        environment["AMQPFAST_NO_EXTENSIONS"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def _codec_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("amqpfast.codec|")]


def test_the_twin_chosen_by_the_environment_is_logged_once():
    lines = _python(LOG_IMPORT.format(before=""), no_extensions=True)

    assert _codec_lines(lines) == ["amqpfast.codec|codec: python (AMQPFAST_NO_EXTENSIONS is set)"]
    assert lines[-1] == "active python"


def test_a_missing_extension_falls_back_to_the_twin_and_says_why():
    # the compiled module made impossible to import, as where it was never built
    before = "sys.modules['amqpfast._codec'] = None\n"

    lines = _python(LOG_IMPORT.format(before=before), no_extensions=False)

    (line,) = _codec_lines(lines)
    assert line.startswith("amqpfast.codec|codec: python (the compiled codec is not there (")
    assert lines[-1] == "active python"


def test_the_compiled_codec_is_logged_when_it_runs(compiled_and_python):
    lines = _python(LOG_IMPORT.format(before=""), no_extensions=False)

    assert _codec_lines(lines) == ["amqpfast.codec|codec: c (compiled)"]


@pytest.mark.parametrize("no_extensions", [False, True])
def test_version_names_the_version_codec_and_interpreter(no_extensions, compiled_and_python):
    import platform

    import amqpfast

    environment = dict(os.environ)
    environment.pop("AMQPFAST_NO_EXTENSIONS", None)
    if no_extensions:
        environment["AMQPFAST_NO_EXTENSIONS"] = "1"
    environment["COLUMNS"] = "40"  # one line however narrow the terminal
    done = subprocess.run(
        [sys.executable, "-m", "amqpfast", "--version"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    codec = "python" if no_extensions else "c"
    interpreter = f"{platform.python_implementation()} {platform.python_version()}"
    assert done.stdout == (
        f"amqpfast {amqpfast.__version__} (codec {codec}; {interpreter}, {sys.executable})\n"
    )
