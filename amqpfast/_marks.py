"""Marks for functions that stand in for aio-pika's coroutine functions."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def coroutine_function(function: F) -> F:
    """Say that ``function`` is a coroutine function, though it is a plain one.

    For functions that return an awaitable where aio-pika's are ``async
    def``: code that checks (``inspect.iscoroutinefunction`` on Python 3.12+,
    ``asyncio.iscoroutinefunction`` everywhere) finds what it expects.
    """
    if hasattr(inspect, "markcoroutinefunction"):  # Python 3.12+
        return inspect.markcoroutinefunction(function)  # type: ignore[no-any-return,unused-ignore]
    setattr(function, "_is_coroutine", getattr(asyncio.coroutines, "_is_coroutine"))  # noqa: B009, B010
    return function
