"""aiormq's API on amqpfast's core (amqpfast.aiormq), against the broker.

The tutorial programs of aiormq's README run here as they are written, on
``from amqpfast import aiormq``; the tests in a subprocess go through
``amqpfast.compat.install()`` and a plain ``import aiormq``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from pamqp import commands as spec
from pamqp.header import ContentHeader

import amqpfast
from amqpfast import aiormq
from amqpfast.aiormq import abc as aiormq_abc
from amqpfast.message import IncomingMessage


def run(code: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def wait_until(condition: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# ------------------------------------------------------------ aiormq's README


async def test_readme_simple_consumer(amqp_url: str, unique: str) -> None:
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(f"Message body is: {message.body!r}")
        await asyncio.sleep(0.1)  # an async handler may wait
        seen.append("After sleep!")

    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        declare_ok = await channel.queue_declare(unique, auto_delete=True)
        consume_ok = await channel.basic_consume(declare_ok.queue, on_message, no_ack=True)
        assert isinstance(consume_ok, spec.Basic.ConsumeOk)

        await channel.basic_publish(b"Hello World!", routing_key=declare_ok.queue)
        await wait_until(lambda: "After sleep!" in seen)
        close_task = asyncio.create_task(
            connection.close(aiormq.ConnectionClosed(320, "broker shutdown"))
        )
        try:
            await connection.closing
        except aiormq.AMQPConnectionError as exc:
            seen.append(f"Connection lost: {exc}")
        await close_task

    assert seen == [
        "Message body is: b'Hello World!'",
        "After sleep!",
        "Connection lost: (320) broker shutdown",
    ]


async def test_readme_simple_publisher(amqp_url: str, unique: str) -> None:
    body = b"Hello World!"
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        declare_ok = await channel.queue_declare(unique, auto_delete=True)
        await channel.basic_publish(body, routing_key=unique, mandatory=True, timeout=10)

        message = await channel.basic_get(declare_ok.queue)

        assert message is not None
        assert message.routing_key == unique
        assert message.body == b"Hello World!"


async def observe_closure(connection: Any) -> BaseException | None:
    try:
        await connection.closing
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        assert task is not None
        if task.cancelling():
            raise
        return exc
    except aiormq.AMQPError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    "reason",
    [
        None,
        asyncio.CancelledError(),
        aiormq.ConnectionClosed(320, "shutdown"),
        aiormq.InvalidFrameError("bad frame"),
    ],
    ids=["none", "cancelled", "closed", "invalid-frame"],
)
async def test_readme_observe_closure(amqp_url: str, reason: BaseException | None) -> None:
    async with aiormq.connect(amqp_url) as connection:
        observer = asyncio.create_task(observe_closure(connection))
        await connection.close(exc=reason)
        assert await observer is reason


async def test_readme_cancelling_an_observer_leaves_the_connection(amqp_url: str) -> None:
    async with aiormq.connect(amqp_url) as connection:
        observer = asyncio.create_task(observe_closure(connection))
        await asyncio.sleep(0)
        observer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await observer
        assert not connection.is_closed


async def test_readme_work_queues(amqp_url: str, unique: str) -> None:
    setup_connection = aiormq.Connection(amqp_url)
    await setup_connection.connect()
    setup_channel = await setup_connection.channel()
    await setup_channel.queue_declare(unique, durable=True)

    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.basic_publish(
            b"Hello World!",
            routing_key=unique,
            properties=aiormq.spec.Basic.Properties(delivery_mode=1),
        )

    message = await setup_channel.basic_get(unique, no_ack=True)
    assert message.body == b"Hello World!"
    assert message.header.properties.delivery_mode == 1

    got: list[aiormq_abc.DeliveredMessage] = []

    async def on_message(message: aiormq_abc.DeliveredMessage) -> None:
        got.append(message)

    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1)
        declare_ok = await channel.queue_declare(unique, durable=True)
        await channel.basic_consume(declare_ok.queue, on_message, no_ack=True)
        await channel.basic_publish(b"task", routing_key=unique)
        await wait_until(lambda: got)
        assert got[0].body == b"task" and got[0].consumer_tag
        await channel.queue_delete(unique)

    await setup_connection.close()


async def test_readme_publish_subscribe_and_routing(amqp_url: str, unique: str) -> None:
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.exchange_declare(exchange=unique, exchange_type="direct")
        declare_ok = await channel.queue_declare(exclusive=True)
        await channel.queue_bind(declare_ok.queue, unique, routing_key="error")
        got: list[bytes] = []

        async def on_message(message: aiormq_abc.DeliveredMessage) -> None:
            got.append(message.body)
            await message.channel.basic_ack(message.delivery.delivery_tag)

        await channel.basic_consume(declare_ok.queue, on_message)
        for severity in ("info", "error"):
            await channel.basic_publish(severity.encode(), routing_key=severity, exchange=unique)
        await wait_until(lambda: got)
        assert got == [b"error"]
        await channel.exchange_delete(unique)


async def test_readme_rpc_reply_to(amqp_url: str, unique: str) -> None:
    # the README's RPC pattern: a reply queue, correlation_id, reply_to
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_declare(unique, auto_delete=True)

        async def serve(message: aiormq_abc.DeliveredMessage) -> None:
            number = int(message.body)
            await message.channel.basic_publish(
                str(number * 2).encode(),
                routing_key=message.header.properties.reply_to,
                properties=aiormq.spec.Basic.Properties(
                    correlation_id=message.header.properties.correlation_id
                ),
            )
            await message.channel.basic_ack(message.delivery.delivery_tag)

        await channel.basic_consume(unique, serve)

        replies = await channel.queue_declare("", exclusive=True, auto_delete=True)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def on_response(message: aiormq_abc.DeliveredMessage) -> None:
            if message.header.properties.correlation_id == "call-1":
                answer.set_result(message.body)

        await channel.basic_consume(replies.queue, on_response, no_ack=True)
        await channel.basic_publish(
            b"21",
            routing_key=unique,
            properties=aiormq.spec.Basic.Properties(
                content_type="text/plain", correlation_id="call-1", reply_to=replies.queue
            ),
        )
        assert await asyncio.wait_for(answer, 10) == b"42"


# ------------------------------------------------------------ return values


async def test_methods_return_aiormqs_frames(amqp_url: str, unique: str) -> None:
    async with aiormq.connect(amqp_url) as connection:
        assert isinstance(connection, aiormq_abc.AbstractConnection)
        assert isinstance(connection.connection_tune, spec.Connection.Tune)
        assert connection.publisher_confirms is True and connection.basic_nack
        assert str(connection).startswith("amqp://guest:******@")
        channel = await connection.channel()
        assert isinstance(channel, aiormq.Channel)
        assert isinstance(channel, aiormq_abc.AbstractChannel)
        assert connection.channels[channel.number] is channel

        declared = await channel.queue_declare(unique, auto_delete=True)
        assert isinstance(declared, spec.Queue.DeclareOk) and declared.queue == unique
        exchange = await channel.exchange_declare(unique, exchange_type="fanout")
        assert isinstance(exchange, spec.Exchange.DeclareOk)
        assert isinstance(await channel.queue_bind(unique, unique), spec.Queue.BindOk)
        assert isinstance(await channel.basic_qos(prefetch_count=5), spec.Basic.QosOk)

        confirm = await channel.basic_publish(b"one", exchange=unique)
        assert isinstance(confirm, spec.Basic.Ack)

        message = await channel.basic_get(unique)
        assert isinstance(message, aiormq_abc.DeliveredMessage)
        assert isinstance(message.delivery, spec.Basic.GetOk)
        assert isinstance(message.header, ContentHeader)
        assert message.header.body_size == 3
        assert message.header.properties is message.properties
        assert (message.exchange, message.message_count, message.redelivered) == (unique, 0, False)
        await channel.basic_ack(message.delivery_tag, wait=True)

        empty = await channel.basic_get(unique)
        assert isinstance(empty.delivery, spec.Basic.GetEmpty) and empty.body == b""
        assert empty.delivery_tag is None and empty.header.body_size == 0

        purged = await channel.queue_purge(unique)
        assert isinstance(purged, spec.Queue.PurgeOk)
        assert isinstance(await channel.rpc(spec.Basic.Recover(requeue=True)), spec.Basic.RecoverOk)
        with pytest.warns(DeprecationWarning):  # pamqp: Basic.RecoverAsync is deprecated
            assert await channel.basic_recover(nowait=True, requeue=True) is None
        assert isinstance(await channel.queue_unbind(unique, unique), spec.Queue.UnbindOk)
        assert isinstance(await channel.queue_delete(unique), spec.Queue.DeleteOk)
        assert isinstance(await channel.exchange_delete(unique), spec.Exchange.DeleteOk)
        assert await channel.queue_declare(unique, nowait=True) is None

        plain = await connection.channel(publisher_confirms=False, frame_buffer_size=1)
        assert isinstance(await plain.confirm_delivery(), spec.Confirm.SelectOk)
        transactional = await connection.channel(publisher_confirms=False)
        assert isinstance(await transactional.tx_select(), spec.Tx.SelectOk)
        assert isinstance(await transactional.tx_commit(), spec.Tx.CommitOk)
        assert isinstance(await transactional.tx_rollback(), spec.Tx.RollbackOk)

        secret = await connection.update_secret("guest", reason="rotation")
        assert isinstance(secret, spec.Connection.UpdateSecretOk)


async def test_a_returned_message_raises_publish_error_by_default(
    amqp_url: str, unique: str
) -> None:
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        returned: list[aiormq_abc.DeliveredMessage] = []
        channel.on_return_callbacks.add(returned.append)

        with pytest.raises(aiormq.PublishError) as caught:
            await channel.basic_publish(b"lost", routing_key=unique, mandatory=True)

        assert isinstance(caught.value.frame, spec.Basic.Return)
        assert caught.value.message.body == b"lost"
        assert returned and isinstance(returned[0].delivery, spec.Basic.Return)
        channel.on_return_callbacks.discard(returned.append)
        assert not channel.on_return_callbacks


async def test_a_nack_raises_delivery_error_with_the_frame(amqp_url: str, unique: str) -> None:
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_declare(
            unique,
            exclusive=True,
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        with pytest.raises(aiormq.DeliveryError) as caught:
            await channel.basic_publish(b"refused", routing_key=unique)
        assert isinstance(caught.value.frame, spec.Basic.Nack)


async def test_a_consumer_tag_in_use_is_refused_before_the_broker(
    amqp_url: str, unique: str
) -> None:
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_declare(unique, exclusive=True)
        await channel.basic_consume(unique, lambda message: None, consumer_tag=unique)
        with pytest.raises(aiormq.DuplicateConsumerTag):
            await channel.basic_consume(unique, lambda message: None, consumer_tag=unique)
        assert not channel.is_closed
        cancel_ok = await channel.basic_cancel(unique)
        assert isinstance(cancel_ok, spec.Basic.CancelOk)


async def test_a_broker_cancel_reaches_aiormqs_callbacks(amqp_url: str, unique: str) -> None:
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_declare(unique)
        frames: list[Any] = []
        channel.on_consumer_cancel_callbacks.add(frames.append)
        await channel.basic_consume(unique, lambda message: None)

        await channel.queue_delete(unique)
        await wait_until(lambda: frames)

        assert isinstance(frames[0], spec.Basic.Cancel)
        assert frames[0].consumer_tag not in channel.consumers


async def test_a_missing_queue_raises_aiormqs_class(amqp_url: str, unique: str) -> None:
    async with aiormq.connect(amqp_url) as connection:
        channel = await connection.channel()
        with pytest.raises(aiormq.ChannelNotFoundEntity):
            await channel.queue_declare(unique, passive=True)
        assert channel.is_closed
        with pytest.raises(aiormq.ChannelInvalidStateError):
            await channel.queue_declare(unique)


def test_exceptions_keep_aiormqs_hierarchy() -> None:
    from amqpfast.aiormq import exceptions

    assert issubclass(exceptions.AMQPConnectionError, ConnectionError)
    assert issubclass(exceptions.ConnectionClosed, exceptions.AMQPConnectionError)
    assert issubclass(exceptions.ChannelNotFoundEntity, exceptions.ChannelClosed)
    assert issubclass(exceptions.ChannelInvalidStateError, RuntimeError)
    assert issubclass(exceptions.InvalidFrameError, exceptions.ProtocolSyntaxError)
    assert issubclass(amqpfast.exceptions.ProtocolError, exceptions.InvalidFrameError)
    assert issubclass(exceptions.PublishError, exceptions.DeliveryError)
    assert exceptions.AMQPException is exceptions.AMQPError
    assert str(exceptions.ConnectionClosed(320, "shutdown")) == "(320) shutdown"
    assert str(exceptions.AMQPConnectionError("gone")) == "gone"
    assert "bad" in repr(exceptions.InvalidFrameError("bad"))


def test_connection_helpers() -> None:
    from amqpfast.aiormq.connection import parse_bool, parse_heartbeat, parse_int, parse_timeout
    from amqpfast.aiormq.tools import censor_url

    assert parse_bool("Yes") and not parse_bool("nonsense") and parse_bool(True)
    assert parse_bool is amqpfast.connection.parse_bool  # one function, as in aio-pika
    assert parse_int("12") == 12 and parse_int("x") == 0
    assert parse_timeout("1.5") == 1.5 and parse_timeout("2.0") == 2
    assert parse_heartbeat("70000") == 0 and parse_heartbeat("30") == 30
    from yarl import URL

    assert str(censor_url(URL("amqp://u:secret@h/"))) == "amqp://u:******@h/"


# ------------------------------------------------------------ the message


def test_a_hand_built_message_goes_through_incoming_message() -> None:
    delivered = aiormq_abc.DeliveredMessage(
        delivery=spec.Basic.Deliver(
            consumer_tag="ctag", delivery_tag=7, redelivered=True, exchange="ex", routing_key="rk"
        ),
        header=ContentHeader(
            properties=spec.Basic.Properties(
                content_type="application/json",
                message_id="m-1",
                headers={"k": "v"},
                message_type="kind",
            ),
        ),
        body=b"{}",
        channel=None,
    )
    assert delivered.header.properties.message_id == "m-1"
    assert (delivered.delivery_tag, delivered.consumer_tag) == (7, "ctag")

    incoming = IncomingMessage(delivered)

    assert incoming.body == b"{}" and incoming.delivery_tag == 7
    assert incoming.redelivered and incoming.routing_key == "rk"
    assert incoming.content_type == "application/json"
    assert incoming.message_id == "m-1" and incoming.type == "kind"
    assert incoming.headers == {"k": "v"}


def test_the_codec_path_builds_the_header_on_demand() -> None:
    properties = amqpfast.codec.BasicProperties(message_id="x")
    message = aiormq_abc.DeliveredMessage(spec.Basic.GetEmpty(), properties, b"abc", None)
    assert message.properties is properties
    header = message.header
    assert header is message.header  # made once
    assert header.properties is properties and header.body_size == 3


# ------------------------------------------------------------ under install()


def test_install_gives_the_face_to_import_aiormq() -> None:
    done = run(
        "import amqpfast, amqpfast.compat, pamqp.commands; amqpfast.compat.install()\n"
        "import aiormq, aiormq.abc, aiormq.exceptions, aiormq.channel, aiormq.connection\n"
        "import aiormq.tools\n"
        "from aiormq.connection import parse_int, parse_bool, parse_timeout\n"
        "from aiormq.abc import DeliveredMessage\n"
        "import aio_pika, aio_pika.exceptions\n"
        "assert aiormq.Channel is amqpfast.core.Channel\n"
        "assert aiormq.connection.Connection is amqpfast.core.Connection\n"
        "assert aiormq.spec is pamqp.commands\n"
        "assert DeliveredMessage is amqpfast.core.DeliveredMessage\n"
        "E = amqpfast.exceptions\n"
        "assert aiormq.exceptions.ChannelNotFoundEntity is E.ChannelNotFoundEntity\n"
        "assert aiormq.ChannelInvalidStateError is E.ChannelInvalidStateError\n"
        "assert aio_pika.exceptions.AMQPConnectionError is aiormq.AMQPConnectionError\n"
        "print(aiormq.__version__, aio_pika.__version__, amqpfast.__version__)\n",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["7.2.4", "10.2.1", amqpfast.__version__]


@pytest.mark.broker
def test_an_aiormq_program_runs_unchanged_under_install(amqp_url: str, unique: str) -> None:
    done = run(
        "import asyncio, sys, amqpfast.compat; amqpfast.compat.install()\n"
        "import aiormq, aiormq.abc\n"
        "async def main(url, name):\n"
        "    async with aiormq.connect(url) as connection:\n"
        "        channel = await connection.channel()\n"
        "        ok = await channel.queue_declare(name, auto_delete=True)\n"
        "        assert isinstance(ok, aiormq.spec.Queue.DeclareOk)\n"
        "        got = asyncio.Event()\n"
        "        async def on_message(message: aiormq.abc.DeliveredMessage):\n"
        "            print(message.body.decode(), message.header.properties.app_id)\n"
        "            await message.channel.basic_ack(message.delivery.delivery_tag)\n"
        "            got.set()\n"
        "        await channel.basic_consume(ok.queue, on_message)\n"
        "        ack = await channel.basic_publish(b'hello', routing_key=name,\n"
        "            properties=aiormq.spec.Basic.Properties(app_id='prog'))\n"
        "        assert isinstance(ack, aiormq.spec.Basic.Ack)\n"
        "        await asyncio.wait_for(got.wait(), 10)\n"
        "        try:\n"
        "            await channel.exchange_declare(name + '-x', passive=True)\n"
        "        except aiormq.exceptions.ChannelNotFoundEntity:\n"
        "            print('404')\n"
        "asyncio.run(main(sys.argv[1], sys.argv[2]))\n",
        amqp_url,
        unique,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hello", "prog", "404"]


async def test_patching_aiormq_channel_reaches_the_high_level(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str
) -> None:
    # aio-pika's tests patch aiormq.Channel.basic_consume and expect Queue.consume to use it
    calls: list[str] = []
    original = aiormq.Channel.basic_consume

    async def basic_consume(self: Any, queue: str, callback: Any, **kwargs: Any) -> Any:
        calls.append(queue)
        return await original(self, queue, callback, **kwargs)

    monkeypatch.setattr(aiormq.Channel, "basic_consume", basic_consume)
    async with await amqpfast.connect(amqp_url) as connection:
        channel = await connection.channel()
        underlay = await channel.get_underlay_channel()
        assert isinstance(underlay, aiormq.Channel)
        queue = await channel.declare_queue(exclusive=True)
        await queue.consume(lambda message: None, no_ack=True)

    assert calls == [queue.name]


async def test_the_client_properties_hook_is_aiormqs(
    monkeypatch: pytest.MonkeyPatch, amqp_url: str, unique: str
) -> None:
    # aiormq builds the handshake's client properties in Connection._client_properties
    sent: list[dict[str, Any]] = []
    original = aiormq.Connection._client_properties

    def client_properties(self: Any, **kwargs: Any) -> dict[str, Any]:
        properties = original(self, **kwargs)
        sent.append(properties)
        return properties

    monkeypatch.setattr(aiormq.Connection, "_client_properties", client_properties)
    extra = {"connection_name": unique, "custom": {"enabled": True}}
    async with await amqpfast.connect(amqp_url, client_properties=extra):
        pass
    assert len(sent) == 1
    assert sent[0]["connection_name"] == unique and sent[0]["custom"] == {"enabled": True}
    assert sent[0]["product"] == "amqpfast"
