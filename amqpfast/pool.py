"""A pool of connections, channels or anything made by an async constructor.

::

    async def get_connection() -> Connection:
        return await amqpfast.connect(url)

    connections: Pool[Connection] = Pool(get_connection, max_size=2)

    async def get_channel() -> Channel:
        async with connections.acquire() as connection:
            return await connection.channel()

    channels: Pool[Channel] = Pool(get_channel, max_size=10)

    async with channels.acquire() as channel:
        await channel.default_exchange.publish(Message(b"hi"), "queue")
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

__all__ = [
    "ConstructorType",
    "Pool",
    "PoolInstance",
    "PoolInvalidStateError",
    "PoolItemContextManager",
]

T = TypeVar("T")


class PoolInstance(abc.ABC):
    """What a pool holds: something with an awaitable ``close()``."""

    @abc.abstractmethod
    def close(self) -> Awaitable[None]:
        """Close the instance (the pool does it when it closes)."""
        raise NotImplementedError


ConstructorType = Callable[..., Awaitable[Any]]


class PoolInvalidStateError(RuntimeError):
    """The pool is closed."""


# What close() puts in the queue of released items to wake those waiting:
# each one that wakes puts it back for the next.
_CLOSED: Any = object()


class Pool(Generic[T]):
    """Up to ``max_size`` instances made by ``constructor`` on demand and reused.

    :meth:`acquire` hands out a released instance if there is one, else makes
    a new one while fewer than ``max_size`` exist, else waits for a release.
    New instances are made one at a time.

    :param constructor: an async function (or one returning an awaitable)
        that makes an instance.
    :param args: positional arguments for ``constructor``.
    :param max_size: the most instances at once (None or 0: no limit).
    :param loop: kept for aio-pika's signature (default: the running loop,
        if any); the pool works on whichever loop uses it.
    :param kwargs: keyword arguments for ``constructor``.
    """

    __slots__ = (
        "_args",
        "_closed",
        "_constructor",
        "_created",
        "_instances",
        "_items",
        "_kwargs",
        "_lock",
        "_max_size",
        "loop",
    )

    def __init__(
        self,
        constructor: Callable[..., Awaitable[T]],
        *args: Any,
        max_size: int | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        self.loop = loop or _running_loop()
        self._constructor = constructor
        self._args = args
        self._kwargs = kwargs
        self._max_size = max_size
        self._created = 0
        self._instances: list[T] = []
        self._items: asyncio.Queue[T] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._created}/{self._max_size or 'unlimited'}"
        return f"<{type(self).__name__} {state} of {self._constructor!r}>"

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def acquire(self) -> PoolItemContextManager[T]:
        """An instance for the ``async with`` block, given back when the block ends.

        :raises PoolInvalidStateError: the pool is closed (also raised by
            the ``async with`` when it closes while waiting).
        """
        if self._closed:
            raise PoolInvalidStateError("acquire operation on closed pool")
        return PoolItemContextManager(self)

    @property
    def _is_overflow(self) -> bool:
        # reuse before making more; make no more than max_size
        if self._items.qsize() > 0:
            return True
        max_size = self._max_size
        return self._created >= max_size if max_size else False

    async def _get(self) -> T:
        if self._closed:
            raise PoolInvalidStateError("get operation on closed pool")
        if not self._is_overflow:
            async with self._lock:
                if self._closed:
                    raise PoolInvalidStateError("create item operation on closed pool")
                # checked again: an instance may have been made or released meanwhile
                if not self._is_overflow:
                    # made while close() waits for the lock: handed out, and closed
                    return await self._create_item()
        return await self._get_released()

    async def _create_item(self) -> T:
        log.debug("creating a new instance with %r", self._constructor)
        item = await self._constructor(*self._args, **self._kwargs)
        self._created += 1
        self._instances.append(item)
        return item

    async def _get_released(self) -> T:
        item = await self._items.get()
        if item is _CLOSED:
            self._items.put_nowait(_CLOSED)  # for the next one waiting
        if self._closed:
            # also an instance released just before close(): it is closed now
            raise PoolInvalidStateError("get operation on closed pool")
        return item

    def put(self, item: T) -> None:
        """Give an instance back (what leaving the ``acquire()`` block does).

        :param item: the instance.
        :raises PoolInvalidStateError: the pool is closed.
        """
        if self._closed:
            raise PoolInvalidStateError("put operation on closed pool")
        self._items.put_nowait(item)

    async def close(self) -> None:
        """Close the pool and every instance it made (those in use included).

        Those waiting in :meth:`acquire` get PoolInvalidStateError. An
        instance whose ``close()`` fails is logged and skipped.
        """
        if self._closed:
            return
        # those waiting for a release wake now, not after a constructor running
        self._closed = True
        self._items.put_nowait(_CLOSED)
        async with self._lock:  # an instance being made now is closed too
            instances, self._instances = self._instances, []
        results = await asyncio.gather(
            *(_close_instance(item) for item in instances), return_exceptions=True
        )
        for item, result in zip(instances, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("closing pooled %r failed: %r", item, result)

    async def __aenter__(self) -> Pool[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    # a pool may be made before the loop runs (asyncio.Queue and Lock bind late)
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _close_instance(item: Any) -> None:
    close = getattr(item, "close", None)
    if close is None:  # nothing to close (a pool of plain values)
        return
    result = close()
    if inspect.isawaitable(result):
        await result


class PoolItemContextManager(AbstractAsyncContextManager[T], Generic[T]):
    """What :meth:`Pool.acquire` returns: ``async with`` gives an instance and takes it back.

    :param pool: the pool.
    """

    __slots__ = ("item", "pool")

    item: T

    def __init__(self, pool: Pool[T]) -> None:
        self.pool = pool

    async def __aenter__(self) -> T:
        self.item = await self.pool._get()
        return self.item

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self.pool.is_closed:
            # close() closed the instance already; raising here would hide
            # the block's own exception
            return
        self.pool.put(self.item)
