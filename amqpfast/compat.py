"""Run aio-pika programs unchanged: :func:`install` makes ``import aio_pika`` give amqpfast.

Nothing happens by default; a program (or its test setup) opts in::

    import amqpfast.compat
    amqpfast.compat.install()

    import aio_pika  # amqpfast, under aio-pika's names
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["SUBMODULES", "install", "uninstall"]

# aio_pika.<name> -> amqpfast.<name>
SUBMODULES = (
    "abc",
    "channel",
    "connection",
    "exceptions",
    "exchange",
    "message",
    "patterns",
    "patterns.base",
    "patterns.master",
    "patterns.rpc",
    "pool",
    "queue",
    "robust_channel",
    "robust_connection",
    "robust_exchange",
    "robust_queue",
    "tools",
    "transaction",
)


def install(force: bool = False) -> None:
    """Register amqpfast (and its submodules) under the name ``aio_pika``.

    :param force: replace an ``aio_pika`` that was imported already (without
        it, that raises RuntimeError: objects made by the real aio-pika would
        not mix with amqpfast's).
    """
    import amqpfast

    current = sys.modules.get("aio_pika")
    if current is amqpfast:
        return
    if current is not None and not force:
        raise RuntimeError("aio_pika is imported already: call install() before importing it")
    sys.modules["aio_pika"] = amqpfast
    for name in SUBMODULES:
        try:
            module = importlib.import_module(f"amqpfast.{name}")
        except ImportError:  # not part of this version
            continue
        sys.modules[f"aio_pika.{name}"] = module


def uninstall() -> None:
    """Undo :func:`install` (``import aio_pika`` finds the real one again, if installed)."""
    import amqpfast

    if sys.modules.get("aio_pika") is amqpfast:
        for name in [
            key for key in sys.modules if key == "aio_pika" or key.startswith("aio_pika.")
        ]:
            del sys.modules[name]
