"""aio-pika's public surface on amqpfast: names, signatures, abstract classes, helpers, states.

The signature and abc checks compare with the real aio-pika (a benchmark
dependency), imported aside from ``amqpfast.compat``; the rest runs against
the broker.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import importlib
import inspect
import logging
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from types import ModuleType, SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from pamqp import commands as spec
from yarl import URL

import amqpfast
import amqpfast.abc
import amqpfast.connection
from amqpfast import Channel, Connection, Message, RobustChannel, RobustConnection
from amqpfast.core import DeliveredMessage
from amqpfast.exceptions import (
    ChannelAccessRefused,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
)
from amqpfast.queue import QueueIterator
from amqpfast.robust_queue import RobustQueueIterator
from amqpfast.tools import (
    CallbackCollection,
    OneShotCallback,
    create_task,
    ensure_awaitable,
    iscoroutinepartial,
    weak_method_callback,
)

# ---------------------------------------------------------------- the real aio-pika

_MODULES = (
    "",
    ".abc",
    ".channel",
    ".connection",
    ".exchange",
    ".message",
    ".patterns",
    ".pool",
    ".queue",
    ".robust_channel",
    ".robust_connection",
    ".robust_exchange",
    ".robust_queue",
    ".transaction",
)


@pytest.fixture(scope="module")
def real_aio_pika() -> Iterator[dict[str, ModuleType]]:
    """aio-pika's own modules by suffix ("" is the package), whatever compat did."""
    pytest.importorskip("aiormq")
    saved = _take_aio_pika_modules()
    try:
        modules = {suffix: importlib.import_module("aio_pika" + suffix) for suffix in _MODULES}
    except ImportError:
        pytest.skip("aio-pika is not installed")
    finally:
        _take_aio_pika_modules()
        sys.modules.update(saved)
    yield modules


def _take_aio_pika_modules() -> dict[str, ModuleType]:
    # out of sys.modules: whatever compat.install() put there, or the real ones
    taken = {
        name: module
        for name, module in sys.modules.items()
        if name == "aio_pika" or name.startswith("aio_pika.")
    }
    for name in taken:
        del sys.modules[name]
    return taken


# Deliberate differences: (where, name) -> why.
SIGNATURE_EXCEPTIONS = {
    ("Connection", "close"): "a plain close() is not an error: close callbacks get None, "
    "not aio-pika's ConnectionClosed class",
    ("RobustConnection", "close"): "as Connection.close (aio-pika's default is CancelledError)",
    ("RobustChannel", "ready"): "an optional timeout added",
    ("", "connect"): "connection_class defaults to amqpfast's own class",
    ("", "connect_robust"): "several URLs (a cluster) allowed; own default class",
    ("connect", "connect"): "connection_class defaults to amqpfast's own class",
    ("robust_connection", "connect_robust"): "several URLs allowed; own default class",
    ("Pool", "__init__"): "keyword arguments for the constructor added",
}


def _parameters(function: Any) -> list[tuple[str, Any, str]] | None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    return [
        (parameter.name, parameter.kind, repr(parameter.default))
        for parameter in signature.parameters.values()
    ]


def _signature_differences(theirs: ModuleType, ours: ModuleType) -> list[str]:
    differences = []
    for name in getattr(theirs, "__all__", ()):
        their_object = getattr(theirs, name)
        our_object = getattr(ours, name, None)
        if our_object is None:
            differences.append(f"{ours.__name__}.{name} is missing")
            continue
        if inspect.isfunction(their_object):
            if (ours.__name__.rpartition(".")[2], name) in SIGNATURE_EXCEPTIONS or (
                "",
                name,
            ) in SIGNATURE_EXCEPTIONS:
                continue
            if _parameters(their_object) != _parameters(our_object):
                differences.append(f"{ours.__name__}.{name}")
            continue
        if not inspect.isclass(their_object):
            continue
        for attribute in dir(their_object):
            if attribute.startswith("_") and attribute not in ("__init__", "__call__"):
                continue
            their_value = inspect.getattr_static(their_object, attribute)
            our_value = inspect.getattr_static(our_object, attribute, None)
            if isinstance(their_value, (classmethod, staticmethod)):
                their_value = their_value.__func__
            if isinstance(our_value, (classmethod, staticmethod)):
                our_value = our_value.__func__
            if not inspect.isfunction(their_value):
                continue
            if attribute == "__init__" and not inspect.isfunction(our_value):
                # a constructor in C (Message's): the class's signature,
                # which lacks the self of their __init__
                their_value = functools.partial(their_value, None)
                our_value = our_object
            where = (name, attribute)
            if our_value is None:
                differences.append(f"{name}.{attribute} is missing")
            elif where not in SIGNATURE_EXCEPTIONS and _parameters(their_value) != _parameters(
                our_value
            ):
                differences.append(f"{name}.{attribute}: {inspect.signature(our_value)}")
    return differences


@pytest.mark.parametrize("suffix", [s for s in _MODULES if s != ".abc"])
def test_public_signatures_match_aio_pika(real_aio_pika: dict[str, ModuleType], suffix: str):
    ours = importlib.import_module("amqpfast" + suffix)
    assert _signature_differences(real_aio_pika[suffix], ours) == []


def test_abstract_classes_match_aio_pika(real_aio_pika: dict[str, ModuleType]):
    theirs = real_aio_pika[".abc"]
    for name in theirs.__all__:
        their_object = getattr(theirs, name)
        assert hasattr(amqpfast.abc, name), name
        if not (inspect.isclass(their_object) and name.startswith("Abstract")):
            continue
        our_object = getattr(amqpfast.abc, name)
        assert set(getattr(our_object, "__abstractmethods__", ())) == set(
            getattr(their_object, "__abstractmethods__", ())
        ), name
        public = {
            attribute
            for attribute in dir(their_object)
            if not attribute.startswith("_") or attribute in ("__aenter__", "__aexit__")
        }
        assert public <= set(dir(our_object)), (name, public - set(dir(our_object)))


def test_log_module():
    assert amqpfast.log.logger is amqpfast.logger
    assert amqpfast.logger.name == "amqpfast"
    assert amqpfast.log.get_logger("amqpfast.queue").name == "amqpfast.queue"
    assert amqpfast.log.get_logger("plugin").name == "amqpfast.plugin"


def test_compat_maps_the_log_module():
    from amqpfast import compat

    assert "log" in compat.SUBMODULES


# ---------------------------------------------------------------- tools


class _Sender:
    pass


@pytest.fixture
def sender() -> _Sender:
    return _Sender()


def test_callback_collection_set_behaviour(sender: _Sender):
    collection: CallbackCollection[Any, ...] = CallbackCollection(sender)

    def callback(_sender: Any) -> None:
        pass

    collection.add(callback)
    collection.add(callback)
    assert callback in collection and len(collection) == 1
    with pytest.raises(ValueError):
        collection.add(None)  # type: ignore[arg-type]
    collection.remove(callback)
    with pytest.raises(LookupError):
        collection.remove(callback)
    collection.discard(callback)

    collection.add(callback)
    collection.freeze()
    with pytest.raises(RuntimeError):
        collection.freeze()
    for change in (collection.add, collection.remove, collection.discard):
        with pytest.raises(RuntimeError):
            change(callback)
    with pytest.raises(RuntimeError):
        collection.clear()

    frozen_copy = copy.copy(collection)
    assert frozen_copy.is_frozen and callback in frozen_copy
    collection.unfreeze()
    with pytest.raises(RuntimeError):
        collection.unfreeze()
    assert not copy.copy(collection).is_frozen
    collection.clear()
    assert not collection and frozen_copy  # a copy has its own set


def test_callback_collection_weak_callbacks(sender: _Sender):
    collection: CallbackCollection[Any, ...] = CallbackCollection(sender)
    calls: list[Any] = []

    class Handler:
        def __call__(self, got_sender: Any, value: int) -> None:
            calls.append((got_sender, value))

    handler = Handler()
    collection.add(handler, weak=True)
    nested: CallbackCollection[Any, ...] = CallbackCollection(sender)
    nested.add(lambda got_sender, value: calls.append(("nested", value)))
    collection.add(nested)  # held weakly, called without the sender
    collection(1)
    assert sorted(calls, key=str) == sorted([(sender, 1), ("nested", 1)], key=str)
    del handler, nested
    assert len(collection) == 0


def test_callback_collection_failures_are_logged(sender: _Sender, caplog: pytest.LogCaptureFixture):
    collection: CallbackCollection[Any, ...] = CallbackCollection(sender)
    calls: list[str] = []

    def broken(_sender: Any) -> None:
        raise RuntimeError("boom")

    collection.add(broken)
    collection.add(lambda _sender: calls.append("ran"))
    with caplog.at_level(logging.ERROR, logger="amqpfast"):
        collection()
    assert calls == ["ran"] and "boom" in caplog.text


@pytest.mark.parametrize("operation", ["remove", "clear", "add"])
def test_callback_may_change_the_collection_from_a_thread(sender: _Sender, operation: str):
    collection: CallbackCollection[Any, ...] = CallbackCollection(sender)
    calls: list[str] = []

    def added(_sender: Any) -> None:
        calls.append("added")

    def callback(_sender: Any) -> None:
        calls.append("callback")
        if operation == "remove":
            collection.remove(callback)
        elif operation == "clear":
            collection.clear()
        else:
            collection.add(added)

    collection.add(callback)
    worker = threading.Thread(target=collection)
    worker.start()
    worker.join(1)
    assert calls == ["callback"]
    collection()
    if operation == "add":
        assert sorted(calls) == ["added", "callback", "callback"]
    else:
        assert not collection and calls == ["callback"]


async def test_callback_collection_call_waits_for_coroutines(sender: _Sender):
    collection: CallbackCollection[Any, ...] = CallbackCollection(sender)
    await collection()  # nothing to wait for
    seen: list[Any] = []
    future = asyncio.get_running_loop().create_future()

    async def slow(got_sender: Any) -> None:
        await asyncio.sleep(0.05)
        seen.append(got_sender)

    collection.add(slow)
    collection.add(future.set_result)
    collection.add(lambda got_sender: asyncio.ensure_future(slow(got_sender)))
    await asyncio.wait_for(collection(), 1)
    assert seen == [sender, sender] and await future is sender


async def test_one_shot_callback_runs_once():
    calls: list[int] = []

    async def callback(value: int) -> None:
        calls.append(value)
        raise RuntimeError("logged, not raised")

    one_shot = OneShotCallback(callback)
    first = one_shot(1)
    one_shot(2)
    await first
    await asyncio.wait_for(one_shot.wait(), 1)
    assert calls == [1] and one_shot.finished.is_set()
    await one_shot(3)
    assert calls == [1] and "OneShotCallback" in repr(one_shot)


async def test_create_task_ensure_awaitable_and_friends():
    async def double(value: int) -> int:
        return value * 2

    assert await create_task(double, 2) == 4
    assert await create_task(lambda value: value + 1, 2) == 3
    with pytest.raises(ZeroDivisionError):
        await create_task(lambda: 1 / 0)

    assert ensure_awaitable(double) is double
    with pytest.deprecated_call(match="You probably registering the"):
        square = ensure_awaitable(lambda value: value * value)
    with pytest.deprecated_call(match="Function"):
        assert await square(3) == 9

    def returns_coroutine(value: int) -> Any:
        return double(value)

    with pytest.deprecated_call():
        wrapped = ensure_awaitable(returns_coroutine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await wrapped(5) == 10

    with pytest.deprecated_call():
        assert iscoroutinepartial(double)


def test_weak_method_callback():
    class Target:
        def method(self, value: int) -> int:
            return value + 1

    target = Target()
    callback = weak_method_callback(target.method)
    assert callback(1) == 2
    del target
    assert callback(1) is None


# ---------------------------------------------------------------- connection objects


def test_connection_parameters_from_url_and_keywords():
    connection = RobustConnection(
        URL("amqp://localhost/?reconnect_interval=7&fail_fast=0&interleave=2"),
        reconnect_interval=3,
        interleave=None,
    )
    assert connection.reconnect_interval == 3
    assert connection.fail_fast is False
    assert connection.kwargs == {"interleave": 2}
    defaults = RobustConnection(URL("amqp://localhost/"))
    assert defaults.reconnect_interval == 5 and defaults.fail_fast is True
    assert "interleave" not in defaults.kwargs
    assert Connection(URL("amqp://h/?happy_eyeballs_delay=.1")).kwargs == {
        "happy_eyeballs_delay": 0.1
    }
    names = [parameter.name for parameter in RobustConnection.PARAMETERS]
    assert names == ["interleave", "happy_eyeballs_delay", "reconnect_interval", "fail_fast"]
    assert RobustConnection.CHANNEL_REOPEN_PAUSE == 1


@pytest.mark.parametrize(
    ("parser", "text", "value"),
    [
        (amqpfast.connection.parse_int, "43", 43),
        (amqpfast.connection.parse_int, "hello", 0),
        (amqpfast.connection.parse_timeout, "0.54", 0.54),
        (amqpfast.connection.parse_timeout, "1000:", 0),
        (amqpfast.connection.parse_timeout, "100", 100),
        (amqpfast.connection.parse_bool, "enable", True),
        (amqpfast.connection.parse_bool, "", False),
    ],
)
def test_parameter_parsers(parser: Any, text: str, value: Any):
    assert parser(text) == value


@pytest.mark.parametrize("connection_class", [Connection, RobustConnection])
async def test_close_before_and_after_a_failed_connect(connection_class: type[Connection]):
    never = connection_class(URL("amqp://localhost/"))
    await never.close()
    assert never.is_closed and never.close_called and await never.closed() is True

    failing = connection_class(URL("amqp://localhost/"))
    with (
        mock.patch(
            "amqpfast.connection.UnderlayConnection.connect",
            side_effect=OSError("connection unavailable"),
        ),
        pytest.raises(OSError, match="unavailable"),
    ):
        await failing.connect(timeout=0.1)
    await failing.close()
    assert failing.is_closed


@pytest.mark.parametrize("resource_class", [Connection, RobustConnection, Channel, RobustChannel])
async def test_cancelled_close_waiter_is_isolated(resource_class: type[Any]):
    connection_class = resource_class if issubclass(resource_class, Connection) else Connection
    connection = connection_class(URL("amqp://localhost/"))
    connection.transport = SimpleNamespace(close=mock.AsyncMock())
    resource = connection
    if issubclass(resource_class, Channel):
        resource = resource_class(connection)
        resource._channel = SimpleNamespace(
            channel=SimpleNamespace(is_closed=False, number=1), close=mock.AsyncMock()
        )
    waiter = asyncio.ensure_future(resource.closed())
    other = asyncio.ensure_future(resource.closed())
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.ensure_future(resource.closed()), 0)
    assert not resource.is_closed and not other.done()
    await resource.close()
    assert await other is True and resource.is_closed


async def test_concurrent_close_waits_for_the_first():
    connection = Connection(URL("amqp://localhost/"))
    release = asyncio.Event()

    async def close_transport(exc: Any) -> None:
        await release.wait()

    connection.transport = SimpleNamespace(close=mock.AsyncMock(side_effect=close_transport))
    first = asyncio.create_task(connection.close())
    await asyncio.sleep(0)
    await connection.close()  # returns at once, the first is still closing
    assert not connection.is_closed
    release.set()
    await first
    assert connection.is_closed


# ---------------------------------------------------------------- against the broker


@pytest.fixture
async def conn(amqp_url: str) -> AsyncIterator[Connection]:
    connection = await amqpfast.connect(amqp_url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_transport_is_the_underlay_connection(amqp_url: str):
    connection = await amqpfast.connect(URL(amqp_url).update_query(heartbeat=0))
    async with connection:
        transport = connection.transport
        assert isinstance(transport, amqpfast.connection.UnderlayConnection)
        assert connection.connection is transport.connection
        assert transport.connection.heartbeat == 0
    assert connection.transport is None
    with pytest.raises(RuntimeError):
        connection.connection  # noqa: B018 - the property raises


async def test_set_qos_all_channels_is_deprecated(conn: Connection):
    channel = await conn.channel()
    with pytest.deprecated_call():
        await channel.set_qos(prefetch_count=1, all_channels=True)


async def test_channel_closed_by_the_broker_refuses_work(conn: Connection):
    channel = await conn.channel()
    with pytest.raises(ChannelAccessRefused):
        await channel.declare_queue("amq.restricted_queue_name", auto_delete=True)
    with pytest.raises(ChannelInvalidStateError):
        await channel.set_qos(100)


async def test_publish_on_a_closed_connection(amqp_url: str):
    connection = await amqpfast.connect(amqp_url)
    channel = await connection.channel(publisher_confirms=False)
    exchange = await channel.declare_exchange("direct", auto_delete=True)
    await connection.close()
    with pytest.raises(ChannelInvalidStateError):
        await exchange.publish(Message(b"late"), "key")


async def test_exclusive_queue_of_another_channel_is_locked(conn: Connection, unique: str):
    first = await conn.channel()
    second = await conn.channel()
    queue = await first.declare_queue(unique, exclusive=True)
    tag = await queue.consume(print, exclusive=True)
    with pytest.raises(ChannelAccessRefused):
        other = await second.declare_queue(unique, exclusive=True)
        await other.consume(print, exclusive=True)
    await queue.cancel(tag)


async def test_publish_results_with_confirms(conn: Connection, unique: str):
    channel = await conn.channel(publisher_confirms=True, on_return_raises=False)
    queue = await channel.declare_queue(auto_delete=True)
    routed = await channel.default_exchange.publish(Message(b"x"), routing_key=queue.name)
    assert isinstance(routed, spec.Basic.Ack)
    returned = await channel.default_exchange.publish(
        Message(b"x"), routing_key=unique, mandatory=True
    )
    assert isinstance(returned, DeliveredMessage) and returned.body == b"x"
    dropped = await channel.default_exchange.publish(
        Message(b"x"), routing_key=unique, mandatory=False
    )
    assert isinstance(dropped, spec.Basic.Ack)


async def test_iterator_closed_from_outside_and_by_its_block(amqp_url: str, unique: str):
    started = asyncio.Event()
    iterator: QueueIterator | None = None

    async def consume() -> None:
        nonlocal iterator
        async with await amqpfast.connect(amqp_url) as connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(unique, auto_delete=True)
            async with queue.iterator() as iterator:
                started.set()
                async for _message in iterator:
                    pytest.fail("nobody publishes")

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    assert iterator is not None
    await iterator.close()
    await asyncio.wait_for(task, 5)


async def test_iterator_on_message_can_be_overridden(conn: Connection):
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)
    seen: list[bytes] = []

    class Recording(QueueIterator):
        async def on_message(self, message: Any) -> None:
            seen.append(message.body)
            await super().on_message(message)

    iterator = Recording(queue)
    async with iterator:
        await channel.default_exchange.publish(Message(b"one"), routing_key=queue.name)
        message = await asyncio.wait_for(anext(iterator), 5)
        await message.ack()
    assert seen == [b"one"] and message.body == b"one"


@pytest.mark.parametrize("iterator_class", [QueueIterator, RobustQueueIterator])
async def test_iterator_timeout_leaves_the_close_to_the_block(iterator_class: type[Any]):
    queue = mock.MagicMock()
    queue.channel.closed.return_value = asyncio.get_running_loop().create_future()
    queue.channel._connection.closed.return_value = asyncio.get_running_loop().create_future()
    iterator = iterator_class(queue, timeout=0.01)
    iterator._consumer_tag = "ctag"
    release = asyncio.Event()

    async def slow_close() -> None:
        await release.wait()
        raise RuntimeError("cleanup failed")

    iterator.close = slow_close
    with pytest.raises(TimeoutError):
        await anext(iterator)
    assert iterator._QueueIterator__closing is not None
    release.set()
    await asyncio.sleep(0.01)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        async with iterator:
            pass
    assert iterator._closed.done() and not hasattr(iterator, "_QueueIterator__closing")


def test_message_headers_raw_is_deprecated():
    message = Message(b"", headers={"a": 1})
    with pytest.deprecated_call():
        assert message.headers_raw == {"a": 1}


async def test_incoming_message_from_a_header_style_delivery(caplog: pytest.LogCaptureFixture):
    # aiormq's DeliveredMessage keeps the properties in a content header
    channel = mock.Mock(is_closed=False, basic_ack=mock.AsyncMock(), basic_reject=mock.AsyncMock())
    delivered = SimpleNamespace(
        delivery=spec.Basic.Deliver(delivery_tag=1, redelivered=True),
        header=SimpleNamespace(properties=spec.Basic.Properties(content_type="text/plain")),
        body=b"body",
        channel=channel,
    )
    message = amqpfast.IncomingMessage(delivered)  # type: ignore[arg-type]
    assert message.content_type == "text/plain" and message.body == b"body"
    error = ValueError("processing")
    with pytest.raises(ValueError) as raised:
        async with message.process():
            channel.is_closed = True
            raise error
    assert raised.value is error and not message.processed
    assert "Reject is not sent since channel is closed" in caplog.text
    channel.is_closed = False
    await message.ack()
    channel.basic_ack.assert_awaited_once()


# ---------------------------------------------------------------- robust


async def test_robust_reconnect_restores_channels(amqp_url: str):
    connection = await amqpfast.connect_robust(amqp_url, reconnect_interval=0.1)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        old = connection.connection
        reconnected: list[Any] = []
        connection.reconnect_callbacks.add(lambda sender: reconnected.append(sender))
        await asyncio.wait_for(connection.reconnect(), 10)
        await asyncio.wait_for(channel.ready(), 5)
        assert connection.connection is not old and reconnected == [connection]
        await channel.default_exchange.publish(Message(b"after"), routing_key=queue.name)
        assert (await queue.get(timeout=5)).body == b"after"
    with pytest.raises(RuntimeError):
        await connection.reconnect()


async def test_robust_channel_closed_by_the_broker_is_restored(amqp_url: str, unique: str):
    connection = await amqpfast.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        channel.REOPEN_PAUSE = 0.05
        queue = await channel.declare_queue(unique, auto_delete=True)
        restore = mock.AsyncMock(wraps=channel.restore)
        channel.restore = restore  # type: ignore[method-assign]
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(f"{unique}-missing", passive=True)
        await asyncio.wait_for(channel.ready(), 5)
        restore.assert_awaited()
        await channel.default_exchange.publish(Message(b"back"), routing_key=queue.name)
        assert (await queue.get(timeout=5)).body == b"back"
    restore.reset_mock()
    await connection.close()
    restore.assert_not_awaited()
