"""Finished: what a call with nothing to wait for returns, compiled and twin.

An ack or a publish without confirms returns it; user code awaits it, hands
it to ``asyncio.create_task`` or ``gather``, as it would a coroutine.
"""

from __future__ import annotations

import asyncio

import pytest


def test_await_gives_none_at_once_and_again(codec):
    finished = codec.Finished()

    async def main() -> list[object]:
        return [await finished, await finished]

    assert asyncio.run(main()) == [None, None]


def test_asyncio_takes_it_as_a_coroutine(codec):
    finished = codec.Finished()
    assert asyncio.iscoroutine(finished)

    async def main() -> tuple[object, list[object]]:
        task = asyncio.create_task(finished)
        gathered = await asyncio.gather(finished, finished)
        return await task, gathered

    assert asyncio.run(main()) == (None, [None, None])


def test_send_ends_at_once(codec):
    with pytest.raises(StopIteration) as ended:
        codec.Finished().send(None)
    assert ended.value.value is None


def test_throw_raises_what_it_is_given_as_a_finished_coroutine_does(codec):
    finished = codec.Finished()
    with pytest.raises(KeyError):
        finished.throw(KeyError)
    error = ValueError("boom")
    with pytest.raises(ValueError) as raised:
        finished.throw(error)
    assert raised.value is error
    with pytest.raises(RuntimeError) as raised:
        finished.throw(RuntimeError, RuntimeError("with a value"))
    assert str(raised.value) == "with a value"
    finished.close()  # nothing to close


def test_a_task_cancelled_before_it_runs_ends_cancelled(codec):
    async def main() -> bool:
        task = asyncio.create_task(codec.Finished())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()

    assert asyncio.run(main())
