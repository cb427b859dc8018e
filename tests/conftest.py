"""Fixtures that run every codec test on both implementations.

The compiled codec must not go missing silently: unless
``AMQPFAST_NO_EXTENSIONS`` asks for the pure-Python run, a failed import of
``amqpfast._codec`` fails the tests that need it instead of skipping them.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from codec_strategies import load_codec


# Session scope: hypothesis refuses function-scoped fixtures in @given tests,
# and the module is the same object for every test anyway.
@pytest.fixture(scope="session", params=["c", "python"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """The codec module under test: the compiled one ("c") or its twin ("python")."""
    return load_codec(request.param)


@pytest.fixture(scope="session")
def compiled_and_python() -> tuple[ModuleType, ModuleType]:
    """Both implementations, for the parity tests."""
    return load_codec("c"), load_codec("python")
