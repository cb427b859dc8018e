"""Callback collections with aio-pika's calling convention: ``callback(sender, *args)``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator, MutableSet
from itertools import chain
from typing import Any

from .core._drive import DONE

log = logging.getLogger("amqpfast")

__all__ = ["CallbackCollection"]

Callback = Callable[..., Any]


class CallbackCollection(MutableSet[Callback]):
    """A set of callbacks, each called as ``callback(sender, *args)``.

    Callbacks may be plain functions or coroutine functions (their coroutines
    run as tasks). ``weak=True`` holds a callback by weak reference. A frozen
    collection refuses changes.

    :param sender: the object passed first to every callback (held weakly).
    """

    __slots__ = ("__weakref__", "_callbacks", "_frozen", "_sender", "_tasks", "_weak_callbacks")

    def __init__(self, sender: Any) -> None:
        self._sender = sender if isinstance(sender, weakref.ReferenceType) else weakref.ref(sender)
        self._callbacks: set[Callback] = set()
        self._weak_callbacks: weakref.WeakSet[Callback] = weakref.WeakSet()
        self._frozen = False
        self._tasks: set[asyncio.Task[Any]] = set()

    def _check_mutable(self) -> None:
        if self._frozen:
            raise RuntimeError("Collection frozen")

    def add(self, callback: Callback, weak: bool = False) -> None:
        """Add a callback (``weak``: hold it by weak reference)."""
        self._check_mutable()
        if not callable(callback):
            raise ValueError("Callback is not callable")
        if weak or isinstance(callback, CallbackCollection):
            self._weak_callbacks.add(callback)
        else:
            self._callbacks.add(callback)

    def discard(self, callback: Callback) -> None:
        """Remove a callback if it is there."""
        self._check_mutable()
        self._callbacks.discard(callback)
        self._weak_callbacks.discard(callback)

    def remove(self, callback: Callback) -> None:
        """Remove a callback; KeyError if it is not there."""
        self._check_mutable()
        if callback in self._callbacks:
            self._callbacks.remove(callback)
        else:
            self._weak_callbacks.remove(callback)

    def clear(self) -> None:
        """Remove every callback."""
        self._check_mutable()
        self._callbacks.clear()
        self._weak_callbacks.clear()

    @property
    def is_frozen(self) -> bool:
        """Whether changes are refused."""
        return self._frozen

    def freeze(self) -> None:
        """Refuse changes from now on."""
        if self._frozen:
            raise RuntimeError("Collection already frozen")
        self._frozen = True

    def unfreeze(self) -> None:
        """Accept changes again."""
        if not self._frozen:
            raise RuntimeError("Collection is not frozen")
        self._frozen = False

    def __contains__(self, item: object) -> bool:
        return item in self._callbacks or item in self._weak_callbacks

    def __len__(self) -> int:
        return len(self._callbacks) + len(self._weak_callbacks)

    def __iter__(self) -> Iterator[Callback]:
        return iter(list(chain(self._callbacks, self._weak_callbacks)))

    def __bool__(self) -> bool:
        return bool(self._callbacks) or bool(self._weak_callbacks)

    def __hash__(self) -> int:
        return id(self)

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Call every callback with the sender first (a nested collection without it).

        Failures are logged. Returns an awaitable that waits for the
        callbacks that are coroutines (awaiting it is optional).
        """
        sender = self._sender()
        futures: list[asyncio.Future[Any]] = []
        for callback in self:
            try:
                if isinstance(callback, CallbackCollection):
                    result = callback(*args, **kwargs)
                else:
                    result = callback(sender, *args, **kwargs)
            except Exception:
                log.exception("callback %r failed", callback)
                continue
            if inspect.isawaitable(result) and result is not DONE:
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
                futures.append(task)
        if not futures:
            return DONE
        return asyncio.gather(*futures, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("callback failed", exc_info=task.exception())
