"""MessageBase: the fields of a message to publish, encoded by the writer itself.

``amqpfast.Message`` builds on it; the writer must send a MessageBase exactly
as the BasicProperties its fields stand for, on both codec implementations.
"""

from __future__ import annotations

import datetime
import inspect
from typing import Any

import pytest
from codec_strategies import joined

from amqpfast._spec import DeliveryMode
from amqpfast.exceptions import EncodeError

STAMP = datetime.datetime(2026, 12, 5, 10, 30, tzinfo=datetime.UTC)

# (MessageBase keywords, the BasicProperties keywords they must be sent as)
CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {"headers": {}, "delivery_mode": 1, "priority": 0}),
    (
        {"headers": {"a": 1, "b": [1, "x"]}, "delivery_mode": 2, "priority": 7},
        {"headers": {"a": 1, "b": [1, "x"]}, "delivery_mode": 2, "priority": 7},
    ),
    (
        {
            "content_type": "application/json",
            "content_encoding": "gzip",
            "correlation_id": "c-1",
            "reply_to": "replies",
            "message_id": "m-1",
            "timestamp": STAMP,
            "type": "order.created",
            "user_id": "guest",
            "app_id": "shop",
        },
        {
            "content_type": "application/json",
            "content_encoding": "gzip",
            "headers": {},
            "delivery_mode": 1,
            "priority": 0,
            "correlation_id": "c-1",
            "reply_to": "replies",
            "message_id": "m-1",
            "timestamp": STAMP,
            "message_type": "order.created",
            "user_id": "guest",
            "app_id": "shop",
        },
    ),
    ({"expiration": 1.5}, {"headers": {}, "delivery_mode": 1, "priority": 0, "expiration": "1500"}),
    (
        {"expiration": datetime.timedelta(minutes=1), "delivery_mode": DeliveryMode.PERSISTENT},
        {"headers": {}, "delivery_mode": 2, "priority": 0, "expiration": "60000"},
    ),
    # false values are absent, others their str(), as in aio-pika
    (
        {"correlation_id": 42, "reply_to": "", "app_id": 0},
        {"headers": {}, "delivery_mode": 1, "priority": 0, "correlation_id": "42"},
    ),
]


@pytest.mark.parametrize(("given", "sent_as"), CASES)
def test_a_message_is_sent_as_the_properties_its_fields_stand_for(codec, given, sent_as):
    message = codec.MessageBase(b"body", **given)
    ours, theirs = codec.FrameWriter(), codec.FrameWriter()

    ours.publish(3, message.body, "ex", "rk", message)
    theirs.publish(3, b"body", "ex", "rk", codec.BasicProperties(**sent_as))

    assert joined(ours.take()) == joined(theirs.take())


def test_defaults_and_conversions(codec):
    message = codec.MessageBase(bytearray(b"abc"), priority=None, message_id=7, timestamp=0)

    assert message.body == b"abc" and type(message.body) is bytes
    assert message.body_size == 3
    assert message.delivery_mode is DeliveryMode.NOT_PERSISTENT
    assert message.priority == 0
    assert message.message_id == "7"
    assert message.timestamp == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert message.content_type is None and message.type is None


def test_headers_are_one_dict_made_when_first_read(codec):
    message = codec.MessageBase(b"")

    message.headers["x"] = 1

    assert message.headers == {"x": 1}
    writer = codec.FrameWriter()
    writer.publish(1, b"", "", "q", message)
    expected = codec.FrameWriter()
    expected.publish(
        1, b"", "", "q", codec.BasicProperties(headers={"x": 1}, delivery_mode=1, priority=0)
    )
    assert joined(writer.take()) == joined(expected.take())


def test_given_headers_are_kept_as_given(codec):
    headers = {"k": "v"}

    assert codec.MessageBase(b"", headers=headers).headers is headers


def test_a_locked_message_refuses_changes(codec):
    message = codec.MessageBase(b"x")
    message.content_type = "text/plain"
    message._locked = True

    with pytest.raises(ValueError, match="locked"):
        message.content_type = "application/json"
    with pytest.raises(ValueError, match="locked"):
        message.headers = {}
    assert message.content_type == "text/plain"
    message._locked = False  # names with an underscore stay writable: the lock itself
    message.content_type = "application/json"
    assert message.content_type == "application/json"


def test_bad_delivery_mode_raises_at_construction(codec):
    with pytest.raises(ValueError):
        codec.MessageBase(b"", delivery_mode=3)


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"priority": 256}, "properties.priority"),
        ({"content_type": 5}, "properties.content_type"),
        ({"headers": {1: "not a str key"}}, "properties.headers"),
    ],
)
def test_a_value_that_cannot_be_sent_raises_encode_error_and_writes_nothing(codec, given, field):
    writer = codec.FrameWriter()
    writer.heartbeat()
    before = len(writer)

    with pytest.raises(EncodeError, match=field.replace(".", r"\.")):
        writer.publish(1, b"x", "", "q", codec.MessageBase(b"x", **given))

    assert len(writer) == before


def test_an_expiration_that_is_no_duration_raises(codec):
    message = codec.MessageBase(b"", expiration="soon")  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="expiration"):
        codec.FrameWriter().publish(1, b"", "", "q", message)


def test_new_id_is_written_for_a_message_without_one(codec):
    writer = codec.FrameWriter()

    made = writer.publish(1, b"", "", "q", codec.MessageBase(b""), new_id=True, return_id=True)
    kept = writer.publish(
        1, b"", "", "q", codec.MessageBase(b"", message_id="mine"), new_id=True, return_id=True
    )

    assert len(made) == 32 and int(made, 16) >= 0
    assert kept == "mine"
    sent = joined(writer.take())
    assert made.encode() in sent and b"mine" in sent


def test_both_implementations_have_one_constructor_signature(compiled_and_python):
    compiled, python = compiled_and_python

    def parameters(cls: type) -> list[tuple[str, Any, Any]]:
        signature = inspect.signature(cls)
        return [(p.name, p.kind, p.default) for p in signature.parameters.values()]

    assert parameters(compiled.MessageBase) == parameters(python.MessageBase)


def test_an_incoming_message_made_of_a_deliverys_parts_is_the_same(codec):
    deliver = codec.BasicDeliver("ctag", 9, True, "ex", "rk")
    properties = codec.BasicProperties(correlation_id="c-1")
    channel = object()

    class Incoming(codec.IncomingBase):  # as amqpfast.IncomingMessage builds on it
        __slots__ = ()

    delivered = codec.DeliveredBase(deliver, properties, b"body", channel)
    for no_ack, made in (
        (False, Incoming.delivered(deliver, properties, b"body", channel)),
        (True, Incoming.delivered_no_ack(deliver, properties, b"body", channel)),
    ):
        through = Incoming(delivered, no_ack)
        assert type(made) is Incoming
        for name in ("_channel", "_delivery", "_properties", "_no_ack", "_processed", "_locked"):
            assert getattr(made, name) == getattr(through, name), name
        assert made.body == b"body" and made.body_size == 4
        assert made._no_ack is no_ack and made._processed is no_ack
