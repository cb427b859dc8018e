"""The low-level channel against the real broker: every method, confirms, consumers."""

from __future__ import annotations

import asyncio

import pytest
from broker_tools import loop_exception_log, wait_until
from pamqp import commands as spec

from amqpfast.codec import BasicProperties
from amqpfast.core import Channel, Connection, DeliveredMessage
from amqpfast.exceptions import (
    ChannelInvalidStateError,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)


async def declare_queue(channel: Channel, **kwargs) -> str:
    ok = await channel.queue_declare("", exclusive=True, **kwargs)
    return ok.queue


async def consume_n(channel: Channel, queue: str, count: int, **kwargs) -> list[DeliveredMessage]:
    got: list[DeliveredMessage] = []
    done = asyncio.get_running_loop().create_future()

    def on_message(message: DeliveredMessage) -> None:
        got.append(message)
        if len(got) == count and not done.done():
            done.set_result(None)

    ok = await channel.basic_consume(queue, on_message, **kwargs)
    await asyncio.wait_for(done, 10)
    await channel.basic_cancel(ok.consumer_tag)
    return got


async def test_exchange_and_queue_lifecycle(channel: Channel, unique: str):
    # not auto-delete: it must outlive its last binding below
    await channel.exchange_declare(unique, "topic")
    declared = await channel.queue_declare(unique, exclusive=True)
    assert (declared.queue, declared.message_count, declared.consumer_count) == (unique, 0, 0)
    await channel.queue_bind(unique, unique, routing_key="a.*")

    await channel.basic_publish(b"routed", exchange=unique, routing_key="a.b")
    await channel.basic_publish(b"not routed", exchange=unique, routing_key="b.a")
    purged = await channel.queue_purge(unique)
    assert purged.message_count == 1

    await channel.queue_unbind(unique, unique, routing_key="a.*")
    await channel.basic_publish(b"after unbind", exchange=unique, routing_key="a.b")
    assert (await channel.queue_declare(unique, passive=True)).message_count == 0

    deleted = await channel.queue_delete(unique)
    assert deleted.message_count == 0
    await channel.exchange_delete(unique)
    with pytest.raises(ChannelNotFoundEntity):
        await channel.exchange_declare(unique, "topic", passive=True)


async def test_exchange_to_exchange_binding(channel: Channel, unique: str):
    source, destination = f"{unique}.src", f"{unique}.dst"
    # not auto-delete: the source must outlive its binding below
    await channel.exchange_declare(source, "fanout")
    await channel.exchange_declare(destination, "fanout")
    queue = await declare_queue(channel)
    await channel.queue_bind(queue, destination)
    await channel.exchange_bind(destination, source)

    await channel.basic_publish(b"through two", exchange=source)
    message = await channel.basic_get(queue, no_ack=True)
    assert message.body == b"through two"

    await channel.exchange_unbind(destination, source)
    await channel.basic_publish(b"lost", exchange=source)
    empty = await channel.basic_get(queue, no_ack=True)
    assert empty.delivery.name == "Basic.GetEmpty"
    await channel.exchange_delete(source)
    await channel.exchange_delete(destination)


async def test_publish_and_get_keep_properties(channel: Channel):
    queue = await declare_queue(channel)
    properties = BasicProperties(
        content_type="application/json",
        headers={"n": 1, "nested": {"list": [1, "two", None]}},
        delivery_mode=2,
        priority=3,
        correlation_id="c-1",
        reply_to="replies",
        expiration="60000",
        message_id="m-1",
        message_type="kind",
        app_id="tests",
    )

    confirm = await channel.basic_publish(b"{}", routing_key=queue, properties=properties)
    message = await channel.basic_get(queue)

    assert isinstance(confirm, spec.Basic.Ack)
    assert message.body == b"{}"
    assert message.properties == properties
    assert (message.routing_key, message.exchange, message.redelivered) == (queue, "", False)
    assert message.message_count == 0
    await channel.basic_ack(message.delivery_tag)


async def test_large_body_crosses_frames(channel: Channel):
    queue = await declare_queue(channel)
    body = bytes(range(256)) * 2048  # 512 KiB: several frames of 128 KiB

    await channel.basic_publish(body, routing_key=queue)
    message = await channel.basic_get(queue, no_ack=True)

    assert message.body == body


async def test_consumer_gets_deliveries_in_order(channel: Channel):
    queue = await declare_queue(channel)
    publisher = await channel.connection.channel(publisher_confirms=False)
    for number in range(500):
        await publisher.basic_publish(str(number).encode(), routing_key=queue)

    messages = await consume_n(channel, queue, 500, no_ack=True)

    assert [int(m.body) for m in messages] == list(range(500))
    assert all(m.consumer_tag == messages[0].consumer_tag for m in messages)


async def test_async_callbacks_that_wait_still_all_run(channel: Channel):
    queue = await declare_queue(channel)
    for number in range(50):
        await channel.basic_publish(str(number).encode(), routing_key=queue)
    started: list[int] = []
    finished: list[int] = []
    done = asyncio.Event()

    async def on_message(message: DeliveredMessage) -> None:
        number = int(message.body)
        started.append(number)
        if number % 2:
            await asyncio.sleep(0.01)  # really waits: runs on as a task
        finished.append(number)
        await message.channel.basic_ack(message.delivery_tag)
        if len(finished) == 50:
            done.set()

    await channel.basic_consume(queue, on_message)
    await asyncio.wait_for(done.wait(), 10)

    assert started == list(range(50))  # called in delivery order
    assert sorted(finished) == list(range(50))


async def test_nack_and_reject_requeue_or_drop(channel: Channel):
    queue = await declare_queue(channel)
    await channel.basic_publish(b"one", routing_key=queue)

    first = await channel.basic_get(queue)
    await channel.basic_nack(first.delivery_tag, requeue=True)
    again = await channel.basic_get(queue)
    assert again.body == b"one" and again.redelivered is True

    await channel.basic_reject(again.delivery_tag, requeue=False)
    gone = await channel.basic_get(queue)
    assert gone.delivery.name == "Basic.GetEmpty"


async def test_prefetch_limits_unacked_deliveries(channel: Channel):
    queue = await declare_queue(channel)
    for number in range(10):
        await channel.basic_publish(str(number).encode(), routing_key=queue)
    await channel.basic_qos(prefetch_count=3)
    held: list[DeliveredMessage] = []
    await channel.basic_consume(queue, held.append)

    await wait_until(lambda: len(held) == 3)
    await asyncio.sleep(0.2)  # and no more come
    assert len(held) == 3
    await channel.basic_ack(held[-1].delivery_tag, multiple=True)
    await wait_until(lambda: len(held) == 6)
    await asyncio.sleep(0.2)
    assert len(held) == 6


async def test_recover_redelivers_unacked(channel: Channel):
    queue = await declare_queue(channel)
    await channel.basic_publish(b"again", routing_key=queue)
    seen: list[DeliveredMessage] = []
    await channel.basic_consume(queue, seen.append)
    await wait_until(lambda: len(seen) == 1)

    await channel.basic_recover(requeue=True)
    await wait_until(lambda: len(seen) == 2)

    assert [m.body for m in seen] == [b"again", b"again"]
    assert seen[1].redelivered is True


async def test_pipelined_confirms_resolve_with_multiple_acks(channel: Channel):
    queue = await declare_queue(channel)

    confirms = await asyncio.gather(
        *(channel.basic_publish(b"x", routing_key=queue) for _ in range(2000))
    )

    assert all(isinstance(confirm, spec.Basic.Ack) for confirm in confirms)
    assert (await channel.queue_declare(queue, passive=True)).message_count == 2000


async def test_nack_raises_delivery_error(channel: Channel):
    # a full queue that refuses new messages makes the broker nack them
    queue = await declare_queue(
        channel, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await channel.basic_publish(b"fits", routing_key=queue)

    with pytest.raises(DeliveryError) as caught:
        await channel.basic_publish(b"refused", routing_key=queue)

    assert caught.value.frame.name == "Basic.Nack"
    assert not channel.is_closed


async def test_returned_message_goes_to_callbacks(connection: Connection, unique: str):
    channel = await connection.channel(on_return_raises=False)
    returned: list[DeliveredMessage] = []
    channel.on_return_callbacks.append(returned.append)

    result = await channel.basic_publish(b"lost", routing_key=unique, mandatory=True)

    assert isinstance(result, DeliveredMessage)  # the publish's result is the returned message
    assert result.delivery.name == "Basic.Return"
    assert len(returned) == 1
    assert returned[0].body == b"lost"
    assert returned[0].delivery.reply_code == 312  # NO_ROUTE


async def test_returned_message_fails_its_own_publish(connection: Connection, unique: str):
    channel = await connection.channel(on_return_raises=True)
    queue = await declare_queue(channel)
    own_id = BasicProperties(message_id="mine")

    results = await asyncio.gather(
        channel.basic_publish(b"ok-1", routing_key=queue, mandatory=True),
        channel.basic_publish(b"lost", routing_key=unique, mandatory=True),
        channel.basic_publish(b"ok-2", routing_key=queue, mandatory=True, properties=own_id),
        channel.basic_publish(b"lost-2", routing_key=unique, mandatory=True, properties=own_id),
        return_exceptions=True,
    )

    assert isinstance(results[0], spec.Basic.Ack) and isinstance(results[2], spec.Basic.Ack)
    assert isinstance(results[1], PublishError) and results[1].message.body == b"lost"
    assert isinstance(results[3], PublishError) and results[3].message.body == b"lost-2"
    assert own_id.message_id == "mine"  # the caller's properties are not changed


async def test_channel_error_closes_the_channel_not_the_connection(connection: Connection):
    channel = await connection.channel()

    with pytest.raises(ChannelNotFoundEntity) as caught:
        await channel.queue_declare("surely-missing-queue", passive=True)

    assert caught.value.reply_code == 404
    assert channel.is_closed and connection.is_opened
    with pytest.raises(ChannelInvalidStateError):
        await channel.basic_publish(b"x")
    with pytest.raises(ChannelInvalidStateError):
        channel.basic_ack(1)
    other = await connection.channel()
    assert (await other.queue_declare("", exclusive=True)).queue


async def test_precondition_failed_on_redeclare(connection: Connection, unique: str):
    channel = await connection.channel()
    await channel.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 5})

    with pytest.raises(ChannelPreconditionFailed) as caught:
        await channel.queue_declare(unique, auto_delete=True, arguments={"x-max-length": 6})

    assert caught.value.reply_code == 406
    cleanup = await connection.channel()
    await cleanup.queue_delete(unique)


async def test_exclusive_queue_is_locked_for_other_connections(
    connection: Connection, amqp_url: str, unique: str
):
    from amqpfast.core import connect

    channel = await connection.channel()
    await channel.queue_declare(unique, exclusive=True)
    async with await connect(amqp_url) as other:
        other_channel = await other.channel()
        with pytest.raises(ChannelLockedResource):
            await other_channel.queue_declare(unique, exclusive=True)


async def test_unknown_delivery_tag_closes_with_406(channel: Channel):
    await channel.basic_ack(999)

    with pytest.raises(ChannelPreconditionFailed):
        await channel.queue_declare("", exclusive=True)
    assert channel.is_closed


async def test_broker_cancel_is_reported(connection: Connection, unique: str):
    channel = await connection.channel()
    await channel.queue_declare(unique, auto_delete=False)
    cancelled: list[str] = []
    channel.on_cancel_callbacks.append(cancelled.append)
    ok = await channel.basic_consume(unique, lambda message: None)

    other = await connection.channel()
    await other.queue_delete(unique)
    await wait_until(lambda: bool(cancelled))

    assert cancelled == [ok.consumer_tag]
    assert ok.consumer_tag not in channel.consumers
    assert not channel.is_closed


async def test_transactions_commit_and_roll_back(connection: Connection):
    channel = await connection.channel(publisher_confirms=False)
    queue = await declare_queue(channel)
    await channel.tx_select()

    await channel.basic_publish(b"rolled back", routing_key=queue)
    await channel.tx_rollback()
    await channel.basic_publish(b"committed", routing_key=queue)
    await channel.tx_commit()

    message = await channel.basic_get(queue, no_ack=True)
    assert message.body == b"committed"
    assert (await channel.queue_declare(queue, passive=True)).message_count == 0


async def test_flow_pauses_deliveries(channel: Channel):
    ok = await channel.flow(active=True)
    assert ok.active is True


async def test_a_call_that_times_out_closes_the_channel(channel: Channel):
    queue = await declare_queue(channel)
    with pytest.raises(TimeoutError):
        await channel.queue_declare(queue, passive=True, timeout=0.0)

    # as with aiormq: what the call did is unknown, its reply may still come
    assert channel.is_closed
    with pytest.raises(ChannelInvalidStateError, match="timed out or was cancelled"):
        await channel.queue_purge(queue)
    other = await channel.connection.channel()
    assert other.number != channel.number  # kept until the broker's CloseOk
    assert (await other.queue_declare(queue, passive=True)).queue == queue


async def test_a_cancelled_call_closes_the_channel(channel: Channel):
    queue = await declare_queue(channel)
    call = asyncio.ensure_future(channel.queue_declare(queue, passive=True))
    await asyncio.sleep(0)  # sent
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert channel.is_closed
    # the CloseOk frees the number
    await wait_until(lambda: channel.number not in channel.connection.channels)


async def test_publishers_wait_while_the_transport_is_paused(proxy, amqp_url):
    from amqpfast.core import connect

    conn = await connect(proxy.url(amqp_url))
    channel = await conn.channel(publisher_confirms=False)
    queue = await declare_queue(channel)
    proxy.stall()
    body = b"x" * 65536

    async def publish_many() -> None:
        for _ in range(2000):  # 128 MiB if nothing held it back
            await channel.basic_publish(body, routing_key=queue)

    with loop_exception_log(asyncio.get_running_loop()) as problems:
        publisher = asyncio.ensure_future(publish_many())
        await asyncio.sleep(1.0)
        assert not publisher.done()  # it waits for the socket
        transport = conn._protocol.transport
        assert transport.get_write_buffer_size() < 16 * 1024 * 1024
        proxy.resume()
        await asyncio.wait_for(publisher, 60)
    assert problems == []
    await conn.close()


async def test_close_does_not_wait_on_a_peer_that_reads_nothing(proxy, amqp_url):
    from amqpfast.core import connect

    conn = await connect(proxy.url(amqp_url))
    channel = await conn.channel(publisher_confirms=False)
    proxy.stall()
    transport = conn._protocol.transport
    while not conn._protocol.paused:  # fill the socket until the transport pauses
        await channel.basic_publish(b"x" * 65536, routing_key="nowhere")
    assert transport.get_write_buffer_size() > 0

    started = asyncio.get_running_loop().time()
    await conn.close(timeout=0.3)
    assert asyncio.get_running_loop().time() - started < 2
    await asyncio.sleep(0.1)
    # dropped, not left waiting to write to a peer that never reads
    assert transport.get_write_buffer_size() == 0 and transport.is_closing()


async def test_async_callbacks_run_in_a_task_with_their_own_context(channel: Channel):
    import contextvars

    seen = contextvars.ContextVar("seen", default=None)
    queue = await declare_queue(channel)
    for number in range(3):
        await channel.basic_publish(str(number).encode(), routing_key=queue)
    results: list[tuple[object, bool]] = []
    done = asyncio.Event()

    async def on_message(message: DeliveredMessage) -> None:
        before = seen.get()
        seen.set(message.body)
        async with asyncio.timeout(5):  # needs a current task
            await asyncio.sleep(0)
        results.append((before, asyncio.current_task() is not None))
        if len(results) == 3:
            done.set()

    await channel.basic_consume(queue, on_message, no_ack=True)
    await asyncio.wait_for(done.wait(), 10)

    assert results == [(None, True)] * 3  # nothing leaks from the message before


async def test_a_get_that_gave_up_gives_its_message_back(channel: Channel):
    queue = await declare_queue(channel)
    await channel.basic_publish(b"not lost", routing_key=queue)

    with pytest.raises(TimeoutError):
        await channel.basic_get(queue, timeout=0.0)  # the GetOk comes after we gave up

    # the channel closes, and with it the broker takes the message back
    other = await channel.connection.channel()
    async with asyncio.timeout(5):
        await closed_by_the_broker(channel)
        while await ready_count(other, queue) != 1:
            await asyncio.sleep(0.05)
    message = await other.basic_get(queue, timeout=5)
    assert message.body == b"not lost" and message.redelivered


async def test_a_message_factory_makes_what_the_consumer_gets(channel: Channel):
    queue = await declare_queue(channel)
    made: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()

    def factory(delivery: object, properties: object, body: bytes, on: Channel) -> tuple:
        return ("made", delivery, properties, body, on)

    ok = await channel.basic_consume(queue, made.put_nowait, no_ack=True, message_factory=factory)
    assert channel.consumers == {ok.consumer_tag: made.put_nowait}  # the callbacks, as before
    properties = BasicProperties(correlation_id="c-7")
    await channel.basic_publish(b"payload", routing_key=queue, properties=properties)

    kind, delivery, received, body, on = await asyncio.wait_for(made.get(), 5)
    assert kind == "made" and body == b"payload" and on is channel
    assert delivery.consumer_tag == ok.consumer_tag and delivery.delivery_tag == 1
    assert received.correlation_id == "c-7"


async def test_a_consume_that_gave_up_leaves_no_consumer(channel: Channel):
    queue = await declare_queue(channel)

    with pytest.raises(TimeoutError):
        await channel.basic_consume(queue, lambda message: None, timeout=0.0)

    other = await channel.connection.channel()
    async with asyncio.timeout(5):
        while (await other.queue_declare(queue, passive=True)).consumer_count != 0:
            await asyncio.sleep(0.05)
    assert channel.consumers == {}


async def closed_by_the_broker(channel: Channel) -> None:
    # Its CloseOk has come (the number is free): the broker has done what was
    # sent before the Close. A queue counted earlier may still hold messages
    # the channel was about to take.
    while channel.connection.channels.get(channel.number) is channel:
        await asyncio.sleep(0.01)


async def ready_count(channel: Channel, queue: str) -> int:
    return (await channel.queue_declare(queue, passive=True)).message_count or 0


async def test_deliveries_to_a_consume_that_gave_up_go_back_to_the_queue(channel: Channel):
    queue = await declare_queue(channel)
    for number in range(50):
        await channel.basic_publish(b"%d" % number, routing_key=queue)
    got: list[DeliveredMessage] = []

    with pytest.raises(TimeoutError):
        await channel.basic_consume(queue, got.append, timeout=0.0)

    # what the broker delivered before our Close is not handed to anyone,
    # and returns to the queue with the channel
    other = await channel.connection.channel()
    async with asyncio.timeout(5):
        await closed_by_the_broker(channel)
        while await ready_count(other, queue) != 50:
            await asyncio.sleep(0.05)
    assert got == [] and channel.consumers == {}


async def test_deliveries_after_a_cancel_without_wait_go_back_to_the_queue(channel: Channel):
    queue = await declare_queue(channel)
    total = 2000
    await asyncio.gather(
        *(channel.basic_publish(b"%d" % number, routing_key=queue) for number in range(total))
    )
    got: list[DeliveredMessage] = []

    ok = await channel.basic_consume(queue, got.append)
    await channel.basic_cancel(ok.consumer_tag, nowait=True)

    # Every message is either with the callback (unacknowledged) or back in the queue.
    async with asyncio.timeout(5):
        while len(got) + await ready_count(channel, queue) != total:
            await asyncio.sleep(0.05)
    assert not channel.is_closed and channel.consumers == {}


async def test_handlers_still_waiting_are_cancelled_when_their_channel_closes(
    connection: Connection,
):
    channel = await connection.channel()
    queue = await declare_queue(channel)
    started: list[bytes] = []
    outcome: dict[bytes, str] = {}

    async def handler(message: DeliveredMessage) -> None:
        started.append(message.body)
        try:
            if message.body == b"closer":
                await channel.close()  # closing its own channel: it finishes
                outcome[message.body] = "finished"
            else:
                await asyncio.sleep(10)
        except asyncio.CancelledError:
            outcome[message.body] = "cancelled"
            raise

    await channel.basic_consume(queue, handler, no_ack=True)
    await channel.basic_publish(b"slow", routing_key=queue)
    async with asyncio.timeout(5):
        while not started:
            await asyncio.sleep(0.01)
    await channel.basic_publish(b"closer", routing_key=queue)
    async with asyncio.timeout(5):
        while len(outcome) < 2:
            await asyncio.sleep(0.01)
    assert outcome == {b"slow": "cancelled", b"closer": "finished"}
    assert channel.is_closed


async def test_a_close_crossing_the_brokers_keeps_the_number_until_close_ok(proxy, amqp_url):
    from amqpfast.core import connect

    conn = await connect(proxy.url(amqp_url))
    try:
        channel = await conn.channel(publisher_confirms=False)
        proxy.slow(0.002, piece=8)  # the broker's Close and its CloseOk arrive in separate reads
        await channel.basic_publish(b"x", exchange="amqpfast-no-such-exchange")
        with pytest.raises(ChannelNotFoundEntity):
            await channel.close(timeout=10)  # crosses the broker's 404 Close

        # The CloseOk for our Close comes after the broker's Close: a channel
        # opened meanwhile must not lose its number to it.
        replacement = await conn.channel(timeout=10)
        proxy.slow(0)
        assert (await replacement.queue_declare("", exclusive=True, timeout=10)).queue
    finally:
        await conn.close()


async def test_a_tag_used_again_after_a_cancel_without_wait_is_a_new_consumer(channel: Channel):
    queue = await declare_queue(channel)
    total = 2000
    await asyncio.gather(
        *(channel.basic_publish(b"%d" % number, routing_key=queue) for number in range(total))
    )
    acked: list[DeliveredMessage] = []
    await channel.basic_consume(queue, acked.append, consumer_tag="reused")
    await channel.basic_cancel("reused", nowait=True)
    async with asyncio.timeout(5):
        while len(acked) + await ready_count(channel, queue) != total:
            await asyncio.sleep(0.05)

    # The same tag, now without acks: what arrives after its cancel is not
    # rejected (the broker would close the channel over an unknown delivery tag).
    await channel.basic_consume(queue, lambda message: None, consumer_tag="reused", no_ack=True)
    await channel.basic_cancel("reused", nowait=True)
    await asyncio.sleep(0.3)
    assert not channel.is_closed
    assert (await channel.queue_declare(queue, passive=True)).queue == queue


async def test_a_method_that_fails_to_encode_leaves_the_channel_usable(channel: Channel):
    from amqpfast.exceptions import EncodeError

    with pytest.raises(EncodeError):
        await channel.queue_declare("", exclusive=True, arguments={"x-bad": object()})
    await channel.basic_qos(prefetch_count=10, timeout=5)
    assert (await channel.queue_declare("", exclusive=True, timeout=5)).queue
