"""The codec against a real RabbitMQ, over the blocking socket client of the demo.

Each test runs on both codecs (the ``codec`` fixture), uses queues with names
of its own that are exclusive to its connection, and every wait is bounded by
the client's socket timeout. The broker address can be changed with
``AMQPFAST_TEST_URL``.
"""

from __future__ import annotations

import datetime
import decimal
import importlib.util
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pamqp import commands

pytestmark = pytest.mark.broker

URL = os.environ.get("AMQPFAST_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/")
TIMEOUT = 10.0
FRAME_MAX = 131072


def _load_demo() -> ModuleType:
    # examples/ is no package: load the demo's client from its file.
    path = Path(__file__).resolve().parents[1] / "examples" / "codec_demo.py"
    spec = importlib.util.spec_from_file_location("codec_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The broker's URL, once it is known to accept connections."""
    client = demo.SocketClient(URL, timeout=TIMEOUT)
    try:
        with socket.create_connection((client.host, client.port), timeout=TIMEOUT):
            pass
    except OSError as error:
        pytest.fail(
            f"RabbitMQ is not reachable at {client.host}:{client.port} ({error}); "
            "start it with `bash scripts/broker.sh`, or deselect with -m 'not broker'"
        )
    return URL


@pytest.fixture
def client(codec: ModuleType, broker_url: str) -> Iterator[Any]:
    """A connected client on the codec under test; closed (or dropped) afterwards."""
    with demo.SocketClient(
        broker_url, timeout=TIMEOUT, frame_max=FRAME_MAX, codec_module=codec
    ) as connected:
        yield connected


def unique(prefix: str) -> str:
    return f"amqpfast-test-{prefix}-{uuid.uuid4().hex[:12]}"


def declare_private_queue(client: Any, channel: int, prefix: str) -> str:
    name = unique(prefix)
    ok = client.queue_declare(channel, name, exclusive=True, auto_delete=True)
    assert isinstance(ok, commands.Queue.DeclareOk)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (name, 0, 0)
    return name


# Header values of every kind the codec writes, as they come back decoded.
HEADERS: dict[str, Any] = {
    "string": "grüße ✓",
    "empty": "",
    "tiny": 7,
    "negative": -100,
    "short": 30000,
    "int32": -(2**31),
    "uint32": 2**32 - 1,
    "int64": 2**62,
    "yes": True,
    "no": False,
    "float": 2.5,
    "none": None,
    "bytes": b"\x00\xffraw",
    "decimal": decimal.Decimal("123.45"),
    "when": datetime.datetime(2024, 5, 17, 12, 30, 1, tzinfo=datetime.UTC),
    "nested": {"level": 2, "list": [1, "two", {"three": 3.0}]},
    "array": [1, -2, "x", True, None, [b"in", "array"]],
}


def test_handshake_negotiates_and_opens_channels(client: Any) -> None:
    assert client.server_properties["product"] == "RabbitMQ"
    assert isinstance(client.server_properties["capabilities"], dict)
    assert client.server_properties["capabilities"]["publisher_confirms"] is True
    assert client.frame_max == FRAME_MAX
    assert client.reader.frame_max == client.writer.frame_max == FRAME_MAX
    assert client.channel_max > 0
    channels = [client.channel_open() for _ in range(3)]
    assert channels == [1, 2, 3]
    for channel in channels:
        client.channel_close(channel)


def test_messages_round_trip_through_a_consumer(codec: ModuleType, client: Any) -> None:
    channel = client.channel_open()
    queue = declare_private_queue(client, channel, "roundtrip")
    big = bytes(range(256)) * 1200  # 300 KiB: three body frames at frame_max 131072
    assert len(big) > 2 * FRAME_MAX
    bodies = [b"", bytes(range(64)), big]
    sent = []
    for number, body in enumerate(bodies):
        properties = codec.BasicProperties(
            content_type="application/octet-stream",
            content_encoding="identity",
            headers={**HEADERS, "number": number},
            delivery_mode=2,
            priority=number,
            correlation_id=f"corr-{number}",
            reply_to="amqpfast.replies",
            expiration="60000",
            message_id=f"id-{number}",
            timestamp=datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            message_type="test",
            user_id="guest",  # RabbitMQ checks it against the login
            app_id="amqpfast-tests",
        )
        sent.append(properties)
        client.publish(channel, body, routing_key=queue, properties=properties, flush=False)
    client.flush()

    tag = client.basic_consume(channel, queue)
    received = [client.next_delivery(channel) for _ in bodies]
    client.ack(channel, received[-1].method.delivery_tag, multiple=True)
    client.basic_cancel(channel, tag)

    for number, (message, body, properties) in enumerate(zip(received, bodies, sent, strict=True)):
        assert isinstance(message, codec.ContentMessage)
        assert message.channel == channel
        method = message.method
        assert isinstance(method, codec.BasicDeliver)
        assert (method.consumer_tag, method.delivery_tag, method.redelivered) == (
            tag,
            number + 1,
            False,
        )
        assert (method.exchange, method.routing_key) == ("", queue)
        assert type(message.body) is bytes
        assert message.body == body
        assert message.properties == properties
        assert message.properties.headers == {**HEADERS, "number": number}
    assert client.queue_delete(channel, queue) == 0
    client.channel_close(channel)


def test_basic_get_and_empty_queue(codec: ModuleType, client: Any) -> None:
    channel = client.channel_open()
    client.confirm_select(channel)
    queue = declare_private_queue(client, channel, "get")
    for body in (b"first", b"second"):
        client.publish(channel, body, routing_key=queue)
    client.wait_confirms(channel, 2)  # both are in the queue once confirmed
    assert client.queue_declare(channel, queue, passive=True).message_count == 2

    message = client.basic_get(channel, queue)
    assert isinstance(message.method, codec.BasicGetOk)
    assert (message.method.delivery_tag, message.method.message_count) == (1, 1)
    assert (message.method.exchange, message.method.routing_key) == ("", queue)
    assert message.body == b"first"
    assert message.properties == codec.BasicProperties()
    client.ack(channel, 1)
    second = client.basic_get(channel, queue, no_ack=True)
    assert (second.body, second.method.message_count) == (b"second", 0)
    assert client.basic_get(channel, queue) is None  # Basic.GetEmpty
    client.channel_close(channel)


def test_publisher_confirms_decode_as_basic_ack(codec: ModuleType, client: Any) -> None:
    channel = client.channel_open()
    client.confirm_select(channel)
    queue = declare_private_queue(client, channel, "confirms")
    count = 50
    for number in range(count):
        client.publish(channel, b"m%d" % number, routing_key=queue, flush=False)
    client.flush()

    confirms = client.wait_confirms(channel, count)
    assert confirms
    assert all(isinstance(confirm, codec.BasicAck) for confirm in confirms)
    tags = [confirm.delivery_tag for confirm in confirms]
    assert tags == sorted(tags) and tags[-1] == count
    # Every tag 1..count is covered exactly once, singly or by a "multiple" ack.
    covered = []
    previous = 0
    for confirm in confirms:
        if confirm.multiple:
            covered.extend(range(previous + 1, confirm.delivery_tag + 1))
        else:
            covered.append(confirm.delivery_tag)
        previous = confirm.delivery_tag
    assert covered == list(range(1, count + 1))
    assert client.queue_declare(channel, queue, passive=True).message_count == count
    client.channel_close(channel)


def test_unroutable_mandatory_publish_comes_back(codec: ModuleType, client: Any) -> None:
    channel = client.channel_open()
    client.confirm_select(channel)
    nowhere = unique("no-such-queue")
    properties = codec.BasicProperties(message_id="lost", headers={"why": "unroutable"})
    client.publish(
        channel, b"return to sender", routing_key=nowhere, properties=properties, mandatory=True
    )

    returned = client.next_return(channel)
    assert isinstance(returned, codec.ContentMessage)
    method = returned.method
    assert isinstance(method, codec.BasicReturn)
    assert (method.reply_code, method.reply_text) == (312, "NO_ROUTE")
    assert (method.exchange, method.routing_key) == ("", nowhere)
    assert returned.body == b"return to sender"
    assert returned.properties == properties
    # The broker confirms a returned message too, after the return.
    confirm = client.wait_confirm(channel)
    assert isinstance(confirm, codec.BasicAck)
    assert (confirm.delivery_tag, confirm.multiple) == (1, False)
    client.channel_close(channel)


def test_passive_declare_of_missing_queue_closes_channel_404(client: Any) -> None:
    channel = client.channel_open()
    missing = unique("missing")
    with pytest.raises(demo.BrokerClosedError) as caught:
        client.queue_declare(channel, missing, passive=True)

    close = caught.value.method
    assert caught.value.channel == channel
    assert isinstance(close, commands.Channel.Close)
    assert close.reply_code == 404
    assert close.reply_text.startswith("NOT_FOUND - no queue")
    assert missing in close.reply_text
    assert (close.class_id, close.method_id) == (50, 10)  # Queue.Declare
    client.channel_close(channel)  # already closed by the broker: a no-op
    # The connection lives on: a new channel works.
    other = client.channel_open()
    assert other != channel
    declare_private_queue(client, other, "after-404")
    client.channel_close(other)
