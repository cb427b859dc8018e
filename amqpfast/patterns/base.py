"""What the patterns share: serialization and the attribute-call proxy."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

__all__ = ["Base", "CallbackType", "Method", "Proxy", "T"]

T = TypeVar("T")
CallbackType = Callable[..., Awaitable[T]]


class Method:
    """A remote method name being built by attribute access on a :class:`Proxy`.

    ``proxy.images.resize`` is ``Method("images.resize", func)``; calling it
    with keyword arguments calls ``func("images.resize", kwargs={...})``.

    :param name: the dotted name so far.
    :param func: what a call is handed to (``Master.create_task``, ``RPC.call``).
    """

    __slots__ = ("func", "name")

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self.func = func

    def __getattr__(self, item: str) -> Method:
        return Method(f"{self.name}.{item}", self.func)

    def __call__(self, **kwargs: Any) -> Any:
        return self.func(self.name, kwargs=kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Proxy:
    """Turns attribute calls into calls: ``proxy.a.b(x=1)`` is ``func("a.b", kwargs={"x": 1})``.

    :param func: called with the dotted name and ``kwargs=`` the keyword arguments.
    """

    __slots__ = ("func",)

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func

    def __getattr__(self, item: str) -> Method:
        return Method(item, self.func)


class Base:
    """Serialization for the patterns: pickle here, JSON in the ``Json*`` subclasses.

    Unpickling runs code the data names: a pattern that deserializes with
    pickle lets whoever can publish to its queues run code in its process.
    """

    __slots__ = ()

    SERIALIZER: Any = pickle
    CONTENT_TYPE = "application/python-pickle"

    def serialize(self, data: Any) -> bytes:
        """Turn ``data`` into a message body (override to change the format).

        :param data: what to send.
        """
        body: bytes = self.SERIALIZER.dumps(data)
        return body

    def deserialize(self, data: bytes) -> Any:
        """Turn a message body back into data (override to change the format).

        :param data: the body received.
        """
        return self.SERIALIZER.loads(data)


def _ensure_awaitable(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    # Handlers may be plain functions (aio-pika's examples use them): wrap
    # them so the patterns can always await, and await what they return if
    # that happens to be awaitable.
    if inspect.iscoroutinefunction(func):
        return func

    @wraps(func)
    async def call(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        if inspect.isawaitable(result):
            return await result
        return result

    return call
