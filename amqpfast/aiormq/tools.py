"""aiormq's ``tools``: small helpers that code on aiormq imports."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from functools import wraps
from types import TracebackType
from typing import Any, TypeVar

from yarl import URL

from ..patterns.base import _ensure_awaitable

__all__ = ["Countdown", "awaitable", "censor_url", "shield"]

T = TypeVar("T")


def censor_url(url: URL) -> URL:
    """The URL with its password (if any) replaced by ``******``."""
    return url if url.password is None else url.with_password("******")


def shield(func: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Make each call of ``func`` immune to its caller's cancellation."""

    @wraps(func)
    def shielded(*args: Any, **kwargs: Any) -> Awaitable[T]:
        return asyncio.shield(func(*args, **kwargs))

    return shielded


#: ``func`` as a coroutine function (one is returned as it is) that awaits
#: what ``func`` returns when that is awaitable
awaitable = _ensure_awaitable


class Countdown:
    """One deadline shared by several waits: each gets the time that is left.

    :param timeout: seconds from now, or None for no deadline.
    """

    __slots__ = ("deadline", "loop")

    def __init__(self, timeout: float | None = None) -> None:
        self.loop = asyncio.get_event_loop()
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def get_timeout(self) -> float | None:
        """Seconds left (None: no deadline).

        :raises TimeoutError: the deadline has passed.
        """
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    async def __call__(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` within the time left.

        Past the deadline the awaitable is cancelled (never left pending).
        """
        try:
            left = self.get_timeout()
        except TimeoutError:
            future = asyncio.ensure_future(awaitable)
            future.cancel()
            await asyncio.gather(future, return_exceptions=True)
            raise
        if left is None:
            return await awaitable
        return await asyncio.wait_for(awaitable, left)

    def enter_context(
        self, context: AbstractAsyncContextManager[T]
    ) -> AbstractAsyncContextManager[T]:
        """``context`` with its entry (not its exit) bound by the deadline."""
        return _DeadlineEntry(self, context)


class _DeadlineEntry(AbstractAsyncContextManager[T]):
    # The exit always runs in full: a lock taken on entry must be let go
    # even when the deadline has passed meanwhile.

    def __init__(self, countdown: Countdown, context: AbstractAsyncContextManager[T]) -> None:
        self.countdown = countdown
        self.context = context

    async def __aenter__(self) -> T:
        return await self.countdown(self.context.__aenter__())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        return await self.context.__aexit__(exc_type, exc, traceback)
