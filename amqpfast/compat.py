"""Run aio-pika programs unchanged: :func:`install` makes ``import aio_pika`` give amqpfast.

Nothing happens by default; a program (or its test setup) opts in::

    import amqpfast.compat
    amqpfast.compat.install()

    import aio_pika  # amqpfast, under aio-pika's names

Libraries on aio-pika sometimes catch aiormq's exception classes themselves
(``except aiormq.exceptions.ChannelNotFoundEntity``). amqpfast raises its own
classes, so where aiormq is installed, :func:`install` also points aiormq's
exception names at amqpfast's classes of the same name.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

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
    _alias_aiormq_exceptions()


def uninstall() -> None:
    """Undo :func:`install` (``import aio_pika`` finds the real one again, if installed)."""
    import amqpfast

    if sys.modules.get("aio_pika") is amqpfast:
        for name in [
            key for key in sys.modules if key == "aio_pika" or key.startswith("aio_pika.")
        ]:
            del sys.modules[name]
    for (module, name), original in _replaced.items():
        setattr(module, name, original)
    _replaced.clear()


# (aiormq module, name) -> aiormq's own class, for uninstall()
_replaced: dict[tuple[ModuleType, str], Any] = {}


def _alias_aiormq_exceptions() -> None:
    # Only the names: the classes cannot share a hierarchy (their layouts
    # differ), and aiormq's own code does not run once aio_pika is amqpfast.
    try:
        import aiormq
        import aiormq.exceptions
    except ImportError:
        return
    from amqpfast import exceptions

    for module in (aiormq.exceptions, aiormq):
        for name, original in list(vars(module).items()):
            ours = getattr(exceptions, name, None)
            if (
                isinstance(original, type)
                and issubclass(original, BaseException)
                and isinstance(ours, type)
                and original is not ours
            ):
                _replaced.setdefault((module, name), original)
                setattr(module, name, ours)
