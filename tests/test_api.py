"""The aio-pika object model on amqpfast, against the real broker."""

from __future__ import annotations

import asyncio
import datetime

import pytest
from pamqp import commands as spec

import amqpfast
from amqpfast import (
    Channel,
    Connection,
    DeliveryMode,
    ExchangeType,
    IncomingMessage,
    Message,
)
from amqpfast.core import DeliveredMessage
from amqpfast.exceptions import (
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    MessageProcessError,
    PublishError,
    QueueEmpty,
)
from amqpfast.message import ProcessContext, ReturnedMessage


@pytest.fixture
async def chan(conn: Connection) -> Channel:
    return await conn.channel()


async def test_connect_from_parts_and_close(amqp_url: str):
    vhost = amqp_url.rsplit("/", 1)[1]
    connection = await amqpfast.connect(
        host="127.0.0.1", login="guest", password="guest", virtualhost=vhost, timeout=10
    )
    assert not connection.is_closed and connection.connected.is_set()
    closed: list[object] = []
    connection.close_callbacks.add(lambda sender, exc: closed.append((sender, exc)))

    async with connection:
        channel = await connection.channel()
        assert not channel.is_closed

    assert connection.is_closed and channel.is_closed
    assert closed == [(connection, None)]
    assert await connection.closed() is True
    assert "guest:guest" not in repr(connection) and "guest:guest" not in str(connection)


async def test_channel_as_context_manager(conn: Connection):
    async with conn.channel() as channel:
        assert channel.is_initialized and not channel.is_closed
        underlay = await channel.get_underlay_channel()
        assert underlay.number == channel.number
    assert channel.is_closed
    with pytest.raises(ChannelInvalidStateError):
        await channel.declare_queue(exclusive=True)


async def test_server_named_queue_and_declaration_result(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)

    assert queue.name.startswith("amq.gen-")
    assert queue.declaration_result is not None
    assert queue.declaration_result.message_count == 0
    again = await chan.get_queue(queue.name)
    assert again.name == queue.name


async def test_publish_returns_the_confirmation_and_get_fetches(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    message = Message(
        b'{"n": 1}',
        headers={"x-trace": "abc", "n": 7},
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=4,
        correlation_id="corr",
        reply_to="replies",
        expiration=60,
        message_id="mid-1",
        timestamp=stamp,
        type="event",
        app_id="tests",
    )

    confirmation = await chan.default_exchange.publish(message, routing_key=queue.name)
    incoming = await queue.get(timeout=5)

    assert isinstance(confirmation, spec.Basic.Ack)  # pamqp's, as aio-pika returns
    assert isinstance(incoming, IncomingMessage) and isinstance(incoming, Message)
    assert incoming.body == b'{"n": 1}' and incoming.body_size == 8
    assert incoming.headers == {"x-trace": "abc", "n": 7}
    assert (incoming.content_type, incoming.content_encoding) == ("application/json", "utf-8")
    assert incoming.delivery_mode is DeliveryMode.PERSISTENT
    assert (incoming.priority, incoming.correlation_id, incoming.reply_to) == (4, "corr", "replies")
    assert incoming.expiration == 60.0
    assert (incoming.message_id, incoming.timestamp, incoming.type) == ("mid-1", stamp, "event")
    assert incoming.app_id == "tests"
    assert (incoming.routing_key, incoming.exchange, incoming.redelivered) == (
        queue.name,
        "",
        False,
    )
    info = incoming.info()
    assert info["delivery_tag"] == incoming.delivery_tag and info["type"] == "event"
    await incoming.ack()


@pytest.mark.parametrize(
    ("expiration", "milliseconds"),
    [(1.5, "1500"), (datetime.timedelta(seconds=2), "2000"), (None, None)],
)
def test_expiration_forms(expiration, milliseconds):
    assert Message(b"", expiration=expiration).properties.expiration == milliseconds


def test_expiration_as_a_datetime_counts_from_now():
    later = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(seconds=30)
    encoded = Message(b"", expiration=later).properties.expiration
    assert encoded is not None and 28000 < int(encoded) <= 30000


def test_message_defaults_and_lock():
    message = Message(b"body")
    assert type(message) is Message  # the constructor's writable stand-in is gone

    assert message.headers == {} and message.priority == 0
    assert message.delivery_mode is DeliveryMode.NOT_PERSISTENT
    message.lock()
    with pytest.raises(ValueError, match="locked"):
        message.body = b"other"
    assert list(Message(b"ab")) == [97, 98]


def test_message_subclasses_construct_and_lock_alike():
    class Tagged(Message):
        __slots__ = ("tag",)

        def __init__(self, body: bytes, tag: str) -> None:
            super().__init__(body, priority=3)
            self.tag = tag

    message = Tagged(b"body", "t1")
    assert type(message) is Tagged and (message.body, message.priority, message.tag) == (
        b"body",
        3,
        "t1",
    )
    message.lock()
    with pytest.raises(ValueError, match="locked"):
        message.priority = 4


async def test_get_on_an_empty_queue(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)

    with pytest.raises(QueueEmpty):
        await queue.get(timeout=5)
    assert await queue.get(fail=False, timeout=5) is None


async def test_ack_twice_is_a_process_error(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    await chan.default_exchange.publish(Message(b"once"), routing_key=queue.name)
    message = await queue.get()

    await message.ack()
    with pytest.raises(MessageProcessError):
        await message.reject()
    assert message.processed and message.locked


async def test_no_ack_messages_refuse_acks(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    await chan.default_exchange.publish(Message(b"free"), routing_key=queue.name)
    message = await queue.get(no_ack=True)

    assert message.processed
    with pytest.raises(TypeError):
        await message.ack()


async def test_nack_requeues_and_reject_drops(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    await chan.default_exchange.publish(Message(b"again"), routing_key=queue.name)

    first = await queue.get()
    await first.nack()  # requeue=True by default
    second = await queue.get()
    assert second.body == b"again" and second.redelivered
    await second.reject()  # requeue=False by default
    assert await queue.get(fail=False) is None


async def test_process_makes_the_context_the_class_makes(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    await chan.default_exchange.publish(Message(b"ctx"), routing_key=queue.name)
    message = await queue.get(timeout=5)

    made = message.process(requeue=True, ignore_processed=True)
    built = ProcessContext(
        message, requeue=True, reject_on_redelivered=False, ignore_processed=True
    )
    assert type(made) is ProcessContext
    for name in ProcessContext.__slots__:
        assert getattr(made, name) == getattr(built, name), name
    async with made as entered:
        assert entered is message
    assert message.processed  # acked on the way out


async def test_process_acks_on_success_and_rejects_on_error(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    for body in (b"good", b"bad", b"retry"):
        await chan.default_exchange.publish(Message(body), routing_key=queue.name)

    good = await queue.get()
    async with good.process():
        pass
    assert good.processed

    bad = await queue.get()
    with pytest.raises(RuntimeError):
        async with bad.process():
            raise RuntimeError("handler failed")
    retry = await queue.get()
    with pytest.raises(RuntimeError):
        async with retry.process(requeue=True):
            raise RuntimeError("try later")

    requeued = await queue.get()
    assert requeued.body == b"retry" and requeued.redelivered
    with pytest.raises(RuntimeError):
        async with requeued.process(requeue=True, reject_on_redelivered=True):
            raise RuntimeError("failed twice")
    assert await queue.get(fail=False) is None  # rejected for good

    await chan.default_exchange.publish(Message(b"manual"), routing_key=queue.name)
    manual = await queue.get()
    async with manual.process(ignore_processed=True):
        await manual.nack(requeue=False)
    assert manual.processed


async def test_consume_with_async_callback_and_cancel(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    received: list[bytes] = []
    done = asyncio.Event()

    async def on_message(message: IncomingMessage) -> None:
        async with message.process():
            received.append(message.body)
            if len(received) == 100:
                done.set()

    tag = await queue.consume(on_message)
    for number in range(100):
        await chan.default_exchange.publish(Message(str(number).encode()), routing_key=queue.name)
    await asyncio.wait_for(done.wait(), 10)
    await queue.cancel(tag)

    assert received == [str(n).encode() for n in range(100)]
    assert queue.declaration_result is not None
    assert (await chan.get_queue(queue.name)).declaration_result.message_count == 0  # type: ignore[union-attr]


async def test_iterator_with_timeout_and_requeue_on_exit(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    for number in range(5):
        await chan.default_exchange.publish(Message(str(number).encode()), routing_key=queue.name)

    seen: list[bytes] = []
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                seen.append(message.body)
            if len(seen) == 2:
                break
    assert seen == [b"0", b"1"]
    await asyncio.sleep(0.2)
    # the three left (fetched by the consumer or not) are back in the queue
    remaining = await chan.declare_queue(queue.name, passive=True)
    assert remaining.declaration_result.message_count == 3  # type: ignore[union-attr]

    with pytest.raises(TimeoutError):
        async for message in queue.iterator(timeout=0.5):
            await message.ack()


async def test_iterator_ends_when_the_channel_closes(conn: Connection):
    channel = await conn.channel()
    queue = await channel.declare_queue(exclusive=True)

    async def drain() -> list[bytes]:
        return [message.body async for message in queue.iterator()]

    task = asyncio.ensure_future(drain())
    await asyncio.sleep(0.2)
    await channel.close()
    assert await asyncio.wait_for(task, 5) == []


async def test_exchanges_route_and_bind_to_each_other(chan: Channel, unique: str):
    source = await chan.declare_exchange(f"{unique}.src", ExchangeType.TOPIC, auto_delete=True)
    target = await chan.declare_exchange(f"{unique}.dst", "fanout", auto_delete=True)
    queue = await chan.declare_queue(exclusive=True)
    await queue.bind(target)
    await target.bind(source, "orders.*")

    await source.publish(Message(b"new order"), routing_key="orders.new")
    await source.publish(Message(b"not routed"), routing_key="invoices.new", mandatory=False)
    message = await queue.get()
    assert message.body == b"new order" and message.exchange == source.name
    await message.ack()
    assert await queue.get(fail=False) is None

    await target.unbind(source, "orders.*")
    await queue.unbind(target)
    await target.delete()
    await chan.exchange_delete(source.name)
    with pytest.raises(ChannelNotFoundEntity):
        await chan.get_exchange(source.name)


async def test_get_exchange_without_ensure_does_not_touch_the_broker(chan: Channel, unique: str):
    exchange = await chan.get_exchange(unique, ensure=False)
    assert exchange.name == unique and not chan.is_closed


async def test_internal_exchange_refuses_publishing(chan: Channel, unique: str):
    exchange = await chan.declare_exchange(unique, internal=True, auto_delete=True)
    with pytest.raises(ValueError, match="internal"):
        await exchange.publish(Message(b"x"), routing_key="")
    await exchange.delete()


async def test_unroutable_message_is_the_result_and_goes_to_return_callbacks(
    chan: Channel, unique: str
):
    returned: list[object] = []
    chan.return_callbacks.add(lambda sender, message: returned.append((sender, message)))

    result = await chan.default_exchange.publish(Message(b"nowhere"), routing_key=unique)

    assert isinstance(result, DeliveredMessage) and result.body == b"nowhere"
    ((sender, message),) = returned
    assert sender is chan
    assert isinstance(message, ReturnedMessage) and message.body == b"nowhere"


async def test_on_return_raises(conn: Connection, unique: str):
    channel = await conn.channel(on_return_raises=True)

    with pytest.raises(PublishError) as caught:
        await channel.default_exchange.publish(Message(b"nowhere"), routing_key=unique)

    assert caught.value.message.body == b"nowhere"
    assert not channel.is_closed


async def test_on_return_raises_needs_confirms(conn: Connection):
    with pytest.raises(RuntimeError):
        conn.channel(publisher_confirms=False, on_return_raises=True)


async def test_queue_delete_defaults_refuse_a_busy_queue(conn: Connection, unique: str):
    channel = await conn.channel()
    queue = await channel.declare_queue(unique)
    await channel.default_exchange.publish(Message(b"still here"), routing_key=unique)

    with pytest.raises(ChannelPreconditionFailed):
        await queue.delete()  # if_unused=True, if_empty=True

    channel = await conn.channel()
    purged = await (await channel.get_queue(unique)).purge()
    assert purged is not None and purged.message_count == 1
    await channel.queue_delete(unique)


async def test_close_callbacks_get_the_channel_error(conn: Connection):
    channel = await conn.channel()
    errors: list[BaseException | None] = []
    channel.close_callbacks.add(lambda sender, exc: errors.append(exc))

    with pytest.raises(ChannelNotFoundEntity):
        await channel.declare_queue("surely-missing", passive=True)
    assert channel.is_closed
    # the callbacks run in a task of their own, as aio-pika's do
    await asyncio.wait_for(channel.closed(), 1)
    assert len(errors) == 1 and isinstance(errors[0], ChannelNotFoundEntity)
    await channel.reopen()
    assert not channel.is_closed
    assert (await channel.declare_queue(exclusive=True)).name


@pytest.mark.parametrize("robust", [False, True])
async def test_close_callbacks_of_a_normal_close_get_channel_closed(
    amqp_url: str, robust: bool
) -> None:
    # as in aio-pika (through aiormq): a close callback always gets an error
    connect = amqpfast.connect_robust if robust else amqpfast.connect
    async with await connect(amqp_url) as connection:
        channel = await connection.channel()
        errors: list[BaseException | None] = []
        channel.close_callbacks.add(lambda sender, exc: errors.append(exc))
        await channel.close()
        await asyncio.wait_for(channel.closed(), 1)
    assert len(errors) == 1 and isinstance(errors[0], ChannelClosed)
    assert errors[0].reply_code == 200


async def test_an_iterator_shows_how_many_messages_it_holds(conn: Connection, unique: str):
    channel = await conn.channel()
    await channel.set_qos(prefetch_count=3)
    queue = await channel.declare_queue(unique, auto_delete=True)
    async with queue.iterator() as iterator:
        # what it fetched and did not hand out yet, as asyncio.Queue reports it
        assert iterator._queue.empty() and iterator._queue.qsize() == 0
        for body in (b"1", b"2", b"3"):
            await channel.default_exchange.publish(Message(body), routing_key=unique)
        async with asyncio.timeout(5):
            while iterator._queue.qsize() < 3:
                await asyncio.sleep(0.01)
        first = await anext(iterator)
        await first.ack()
        assert first.body == b"1" and iterator._queue.qsize() == 2


async def test_transaction_commits_and_rolls_back(conn: Connection):
    channel = await conn.channel(publisher_confirms=False)
    queue = await channel.declare_queue(exclusive=True)

    async with channel.transaction():
        await channel.default_exchange.publish(Message(b"kept"), routing_key=queue.name)
    with pytest.raises(KeyError):
        async with channel.transaction():
            await channel.default_exchange.publish(Message(b"dropped"), routing_key=queue.name)
            raise KeyError("abort")

    assert (await queue.get()).body == b"kept"
    assert await queue.get(fail=False) is None
    confirming = await conn.channel()
    with pytest.raises(RuntimeError):
        confirming.transaction()


async def test_qos_and_flow(chan: Channel):
    assert isinstance(await chan.set_qos(prefetch_count=10), spec.Basic.QosOk)
    flow = await chan.flow(active=True)
    assert flow.active is True


async def test_update_secret(conn: Connection):
    await conn.update_secret("guest", reason="rotation", timeout=10)
    assert not conn.is_closed


def test_make_url_builds_or_extends():
    from amqpfast.connection import make_url

    assert str(make_url()) == "amqp://guest:guest@localhost:5672//"
    built = make_url(host="h", port=1, virtualhost="vh", heartbeat=5, ssl_options={"cafile": "/a"})
    assert str(built) == "amqp://guest:guest@h:1/vh?heartbeat=5&cafile=/a"
    extended = make_url("amqp://h/v", name="n", fail_fast=False, heartbeat=None)
    assert str(extended) == "amqp://h/v?name=n&fail_fast=0"


async def test_logs_and_errors_never_show_the_password(amqp_url, caplog):
    import logging

    secret = "n0t-the-password"
    bad = amqp_url.replace("guest:guest@", f"guest:{secret}@")
    with caplog.at_level(logging.DEBUG, logger="amqpfast"):
        with pytest.raises(Exception) as caught:
            await amqpfast.connect(bad, timeout=10)
        connection = await amqpfast.connect(amqp_url)
        await connection.close()

    assert secret not in str(caught.value) and secret not in repr(caught.value)
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert "guest:guest@" not in record.getMessage()
    assert any("connected to" in record.getMessage() for record in caplog.records)


async def test_two_readers_of_one_iterator_both_end_on_close(chan: Channel):
    queue = await chan.declare_queue(exclusive=True)
    iterator = queue.iterator()
    await iterator.consume()

    async def read() -> list[bytes]:
        return [message.body async for message in iterator]

    readers = [asyncio.ensure_future(read()) for _ in range(2)]
    await asyncio.sleep(0.1)
    await iterator.close()

    assert await asyncio.wait_for(asyncio.gather(*readers), 5) == [[], []]
