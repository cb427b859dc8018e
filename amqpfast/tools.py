"""Callback helpers with aio-pika's names and calling convention: ``callback(sender, *args)``."""

from __future__ import annotations

import asyncio
import inspect
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableSet
from collections.abc import Set as AbstractSet
from functools import wraps
from itertools import chain
from typing import Any, ClassVar, Generic, ParamSpec, Protocol, TypeVar

from .core._drive import DONE
from .log import get_logger

log = get_logger(__name__)

__all__ = [
    "CallbackCollection",
    "CallbackSetType",
    "CallbackType",
    "OneShotCallback",
    "create_task",
    "ensure_awaitable",
    "iscoroutinepartial",
    "weak_method_callback",
]

T = TypeVar("T")
_Sender = TypeVar("_Sender", contravariant=True)
_Params = ParamSpec("_Params")
_Return = TypeVar("_Return", covariant=True)


class CallbackType(Protocol[_Sender, _Params, _Return]):
    """What a collection calls: ``callback(sender, *args, **kwargs)``, plain or async."""

    def __call__(
        self,
        sender: _Sender | None,
        /,
        *args: _Params.args,
        **kwargs: _Params.kwargs,
    ) -> _Return | Awaitable[_Return]: ...


Callback = Callable[..., Any]


def iscoroutinepartial(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` gives a coroutine (deprecated, as in aio-pika).

    Use :func:`inspect.iscoroutinefunction`, which sees through partials.
    """
    warnings.warn(
        "iscoroutinepartial() is deprecated: call inspect.iscoroutinefunction()",
        DeprecationWarning,
        stacklevel=2,
    )
    return inspect.iscoroutinefunction(fn)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("background call failed", exc_info=future.exception())


def create_task(
    func: Callable[..., Coroutine[Any, Any, T] | Awaitable[T] | T],
    *args: Any,
    loop: asyncio.AbstractEventLoop | None = None,
    **kwargs: Any,
) -> Awaitable[T]:
    """Run ``func(*args, **kwargs)`` soon and return a future of its result.

    A coroutine function runs as a Task; a plain function is called on the
    next loop turn (unless the returned future was cancelled by then).
    A failure is logged as well as set on the future.
    """
    if loop is None:
        loop = asyncio.get_running_loop()
    if inspect.iscoroutinefunction(func):
        task: asyncio.Task[T] = loop.create_task(func(*args, **kwargs))
        task.add_done_callback(_log_failure)
        return task
    future: asyncio.Future[T] = loop.create_future()

    def call() -> None:
        if future.done():
            return
        try:
            future.set_result(func(*args, **kwargs))  # type: ignore[arg-type]
        except Exception as error:
            future.set_exception(error)

    future.add_done_callback(_log_failure)
    loop.call_soon(call)
    return future


class CallbackCollection(MutableSet[Callback], Generic[_Sender, _Params]):
    """A set of callbacks, each called as ``callback(sender, *args)``.

    Callbacks may be plain functions or coroutine functions (their coroutines
    run as tasks). ``add(..., weak=True)`` holds a callback by weak
    reference; a nested collection is always held weakly and is called
    without the sender. A frozen collection refuses changes. Changes are
    thread-safe, and a callback may change the collection while it runs
    (the call works on a snapshot).

    :param sender: the object passed first to every callback (held weakly).
    """

    __slots__ = ("__weakref__", "_callbacks", "_frozen", "_lock", "_sender", "_weak_callbacks")

    _tasks: ClassVar[set[asyncio.Future[Any]]] = set()  # running callback coroutines

    def __init__(self, sender: _Sender | weakref.ReferenceType[_Sender]) -> None:
        self._sender: weakref.ReferenceType[Any] = (
            sender if isinstance(sender, weakref.ReferenceType) else weakref.ref(sender)
        )
        self._callbacks: set[Callback] = set()
        self._weak_callbacks: weakref.WeakSet[Callback] = weakref.WeakSet()
        self._frozen = False
        self._lock = threading.Lock()

    def _check_mutable(self) -> None:
        if self._frozen:
            raise RuntimeError("Collection frozen")

    def add(self, callback: Callback, weak: bool = False) -> None:
        """Add a callback (``weak``: hold it by weak reference).

        :raises ValueError: ``callback`` is not callable.
        :raises RuntimeError: the collection is frozen.
        """
        self._check_mutable()
        if not callable(callback):
            raise ValueError("Callback is not callable")
        with self._lock:
            if weak or isinstance(callback, CallbackCollection):
                self._weak_callbacks.add(callback)
            else:
                self._callbacks.add(callback)

    def discard(self, callback: Callback) -> None:
        """Remove a callback if it is there."""
        self._check_mutable()
        with self._lock:
            self._callbacks.discard(callback)
            self._weak_callbacks.discard(callback)

    def remove(self, callback: Callback) -> None:
        """Remove a callback; KeyError if it is not there."""
        self._check_mutable()
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
            else:
                self._weak_callbacks.remove(callback)

    def clear(self) -> None:
        """Remove every callback."""
        self._check_mutable()
        with self._lock:
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
        with self._lock:
            return iter(tuple(chain(self._callbacks, self._weak_callbacks)))

    def __bool__(self) -> bool:
        return bool(self._callbacks) or bool(self._weak_callbacks)

    def __hash__(self) -> int:
        return id(self)

    def __copy__(self) -> CallbackCollection[_Sender, _Params]:
        """A new collection with the same sender, callbacks and frozen state."""
        copied: CallbackCollection[_Sender, _Params] = type(self)(self._sender)
        with self._lock:
            copied._callbacks = set(self._callbacks)
            copied._weak_callbacks = weakref.WeakSet(self._weak_callbacks)
        copied._frozen = self._frozen
        return copied

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """Call every callback with the sender first (a nested collection without it).

        A callback that raises is logged and the others still run. Returns
        an awaitable that waits for the callbacks that returned awaitables
        (awaiting it is optional: they run as tasks either way).
        """
        sender = self._sender()
        futures: list[asyncio.Future[Any]] = []
        for callback in self:
            try:
                if isinstance(callback, CallbackCollection):
                    result = callback(*args, **kwargs)
                else:
                    result = callback(sender, *args, **kwargs)
                if result is DONE or not inspect.isawaitable(result):
                    continue
                future = asyncio.ensure_future(result)
            except Exception as error:
                log.error("callback %r failed: %r", callback, error, exc_info=True)
                continue
            self._tasks.add(future)
            future.add_done_callback(self._tasks.discard)
            futures.append(future)
        if not futures:
            return DONE
        return asyncio.gather(*futures, return_exceptions=True)


CallbackSetType = AbstractSet[CallbackType[Any, Any, None] | CallbackCollection[Any, Any]]


class OneShotCallback:
    """An async callback that runs at most once, however often it is called.

    The first call starts it in a task; later calls (and calls after it
    finished) do nothing. :meth:`wait` waits until it has run. Errors are
    logged, not raised.

    :param callback: a coroutine function.
    """

    __slots__ = ("_lock", "_task", "callback", "finished", "loop")

    def __init__(self, callback: Callable[..., Awaitable[Any]]) -> None:
        self.callback: Callable[..., Awaitable[Any]] | None = callback
        self.loop = asyncio.get_running_loop()
        self.finished = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: cb={self.callback!r}>"

    def wait(self) -> Coroutine[Any, Any, Any]:
        """A coroutine that finishes once the callback has run."""
        return self.finished.wait()

    async def _run(self, *args: Any, **kwargs: Any) -> None:
        async with self._lock:
            callback = self.callback
            if self.finished.is_set() or callback is None:
                return
            try:
                await callback(*args, **kwargs)
            except Exception as error:
                log.error("callback %r failed: %r", self, error, exc_info=True)
            finally:
                # dropped so that whatever it refers to can go
                self.callback = None
                self.loop.call_soon(self.finished.set)

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        if self._task is not None or self.finished.is_set():
            return DONE
        self._task = self.loop.create_task(self._run(*args, **kwargs))
        return self._task


def weak_method_callback(method: Callable[_Params, Any]) -> Callable[_Params, Any]:
    """A function that calls a bound method without keeping its object alive.

    Useful as a done callback of a long-lived future: once the object is
    collected, the function does nothing (and returns None).
    """
    reference = weakref.WeakMethod(method)

    def call(*args: _Params.args, **kwargs: _Params.kwargs) -> Any:
        bound = reference()
        return None if bound is None else bound(*args, **kwargs)

    return call


def ensure_awaitable(
    func: Callable[_Params, T | Awaitable[T]],
) -> Callable[_Params, Awaitable[T]]:
    """``func`` as a coroutine function.

    A coroutine function comes back as it is. Anything else is wrapped; a
    plain function warns (DeprecationWarning) now, and each call whose result
    is not awaitable warns again.
    """
    if inspect.iscoroutinefunction(func):
        return func
    if inspect.isfunction(func):
        warnings.warn(
            f"{func!r} is not a coroutine function. You probably registering the "
            "wrong callable: plain functions block the event loop and are deprecated",
            DeprecationWarning,
            stacklevel=2,
        )

    @wraps(func)
    async def awaitable(*args: _Params.args, **kwargs: _Params.kwargs) -> T:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        warnings.warn(
            f"Function {func!r} returned {type(result).__name__}, not an awaitable: "
            "make it a coroutine function (this fallback will go away)",
            DeprecationWarning,
            stacklevel=2,
        )
        return result

    return awaitable


def _warn_channel_argument(channel: Any) -> None:
    # restore(channel) of robust objects: aio-pika once took the new channel
    if channel is not None:
        warnings.warn(
            "restore() ignores its channel argument (it is deprecated)",
            DeprecationWarning,
            stacklevel=3,
        )
