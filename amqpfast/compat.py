"""Run aio-pika and aiormq programs unchanged: their imports give amqpfast.

Nothing happens by default; a program (or its test setup) opts in::

    import amqpfast.compat
    amqpfast.compat.install()

    import aio_pika  # amqpfast, under aio-pika's names
    import aiormq  # amqpfast.aiormq: aiormq's API on amqpfast's core

``aio_pika`` is a module that shows amqpfast's namespace (``aio_pika.Message
is amqpfast.Message``; setting an attribute on it sets it on amqpfast) but
has a ``__version__`` of its own: that of the aio-pika release amqpfast
follows. ``aio_pika.abc``, ``aio_pika.queue`` ... are amqpfast's modules.

Code that reaches below aio-pika (``channel.get_underlay_channel()``,
``aiormq.spec``, ``aiormq.abc.DeliveredMessage``, ``except
aiormq.exceptions.ChannelNotFoundEntity``) gets :mod:`amqpfast.aiormq`:
``aiormq``, ``aiormq.abc``, ``aiormq.channel``, ``aiormq.connection``,
``aiormq.exceptions``, ``aiormq.tools``, ``aiormq.types`` are its modules and
``aiormq.spec`` is pamqp's ``commands``, as in aiormq. Where the real aiormq
was imported before, its exception names are pointed at amqpfast's classes as
well (code holding its modules catches what amqpfast raises).

``install(aiormq=False)`` leaves the real aiormq in place and only points its
exception names at amqpfast's classes of the same name.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType
from typing import Any

__all__ = ["AIO_PIKA_VERSION", "SUBMODULES", "install", "uninstall"]

#: the aio-pika release whose behaviour amqpfast matches: ``aio_pika.__version__``
AIO_PIKA_VERSION = "10.2.1"

# aio_pika.<name> -> amqpfast.<name>
SUBMODULES = (
    "abc",
    "channel",
    "connection",
    "exceptions",
    "exchange",
    "log",
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


class _ModuleAlias(ModuleType):
    """A module under another name that shows a target module's namespace.

    Reads, writes and deletes of attributes go to the target, except for
    the few names the alias keeps itself (its ``__name__``, ``__version__`` ...).
    """

    def __init__(self, name: str, target: ModuleType, **own: Any) -> None:
        super().__init__(name, target.__doc__)
        vars(self).update(own, _alias_target=target)

    def __getattr__(self, name: str) -> Any:
        return getattr(vars(self)["_alias_target"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in vars(self):
            super().__setattr__(name, value)
        else:
            setattr(vars(self)["_alias_target"], name, value)

    def __delattr__(self, name: str) -> None:
        if name in vars(self):
            super().__delattr__(name)
        else:
            delattr(vars(self)["_alias_target"], name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(vars(self)["_alias_target"])) | set(vars(self)))

    def __repr__(self) -> str:
        return f"<module {self.__name__!r} (alias of {vars(self)['_alias_target'].__name__!r})>"


def _is_ours(module: Any) -> bool:
    return isinstance(module, _ModuleAlias) or getattr(module, "__name__", "").startswith(
        "amqpfast"
    )


def install(force: bool = False, aiormq: bool = True) -> None:
    """Register amqpfast (and its submodules) under the name ``aio_pika``.

    :param force: replace an ``aio_pika`` that was imported already (without
        it, that raises RuntimeError: objects made by the real aio-pika would
        not mix with amqpfast's).
    :param aiormq: register :mod:`amqpfast.aiormq` under the name ``aiormq``
        too; False keeps the real aiormq and only points its exception names
        at amqpfast's classes.
    """
    import amqpfast

    current = sys.modules.get("aio_pika")
    if current is not None and not _is_ours(current) and not force:
        raise RuntimeError("aio_pika is imported already: call install() before importing it")
    if current is None or not _is_ours(current):
        sys.modules["aio_pika"] = _ModuleAlias("aio_pika", amqpfast, __version__=AIO_PIKA_VERSION)
        for name in SUBMODULES:
            try:
                module = importlib.import_module(f"amqpfast.{name}")
            except ImportError:  # not part of this version
                continue
            sys.modules[f"aio_pika.{name}"] = module
    real = [
        module
        for module in (sys.modules.get("aiormq.exceptions"), sys.modules.get("aiormq"))
        if module is not None and not _is_ours(module)
    ]
    if aiormq:
        _install_aiormq()
    elif not real:
        with contextlib.suppress(ImportError):
            real = [importlib.import_module(name) for name in ("aiormq.exceptions", "aiormq")]
    _alias_aiormq_exceptions(real)


def _install_aiormq() -> None:
    from pamqp import commands

    from . import aiormq as face

    modules = {"aiormq": face, "aiormq.spec": commands}
    for name in face.SUBMODULES:
        modules[f"aiormq.{name}"] = importlib.import_module(f"amqpfast.aiormq.{name}")
    for name in [key for key in sys.modules if key == "aiormq" or key.startswith("aiormq.")]:
        module = sys.modules[name]
        if module is not modules.get(name) and not _is_ours(module):  # the real aiormq's
            _displaced.setdefault(name, sys.modules.pop(name))
    sys.modules.update(modules)


def uninstall() -> None:
    """Undo :func:`install` (``import aio_pika`` and ``import aiormq`` find the real ones again)."""
    if _is_ours(sys.modules.get("aio_pika")):
        _forget("aio_pika")
    if _is_ours(sys.modules.get("aiormq")):
        _forget("aiormq")
    sys.modules.update(_displaced)
    _displaced.clear()
    for (module, name), original in _replaced.items():
        setattr(module, name, original)
    _replaced.clear()


def _forget(package: str) -> None:
    for name in [key for key in sys.modules if key == package or key.startswith(f"{package}.")]:
        del sys.modules[name]


# (aiormq module, name) -> aiormq's own class, for uninstall()
_replaced: dict[tuple[ModuleType, str], Any] = {}
# the real aiormq's entries in sys.modules that the face took over, for uninstall()
_displaced: dict[str, ModuleType] = {}


def _alias_aiormq_exceptions(real: list[ModuleType]) -> None:
    # In the real aiormq's modules only the names change: the classes cannot
    # share a hierarchy (their layouts differ).
    from amqpfast import exceptions

    for module in real:
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
