"""The compiled codec's public fields: read, written and deleted as attributes.

The fields the client reads per message are member descriptors (what
``__slots__`` make) in the compiled codec, so Python reads them with a
specialised instruction. They behave as Cython's own public attributes did:
any value can be set, and deleting one leaves None, which the C code that
reads these fields (the writer, IncomingBase) takes as an absent value.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from codec_strategies import load_codec

from amqpfast.exceptions import EncodeError


@pytest.fixture(scope="module")
def compiled() -> ModuleType:
    return load_codec("c")


def _samples(codec: ModuleType) -> list[tuple[Any, tuple[str, ...]]]:
    deliver = codec.BasicDeliver("ctag", 7, False, "ex", "rk")
    properties = codec.BasicProperties(correlation_id="c-1")
    return [
        (codec.MethodFrame(1, deliver), ("channel", "method")),
        (codec.ContentMessage(1, deliver, properties, b"body"), ("channel", "method", "body")),
        (deliver, ("consumer_tag", "delivery_tag", "redelivered", "exchange", "routing_key")),
        (codec.BasicAck(3, True), ("delivery_tag", "multiple")),
        (codec.BasicNack(3, True, False), ("delivery_tag", "multiple", "requeue")),
        (properties, ("correlation_id", "headers", "message_type", "cluster_id")),
        (codec.MessageBase(b"x", app_id="a"), ("body", "app_id", "type", "timestamp")),
        (codec.DeliveredBase(deliver, properties, b"b", None), ("delivery", "body", "channel")),
    ]


def test_fields_read_what_was_set_and_none_once_deleted(compiled):
    for obj, names in _samples(compiled):
        for name in names:
            marker = object()
            setattr(obj, name, marker)
            assert getattr(obj, name) is marker, (type(obj).__name__, name)
            delattr(obj, name)
            assert getattr(obj, name) is None, (type(obj).__name__, name)


def test_the_hot_fields_are_member_descriptors(compiled):
    # what lets Python read them without the generic lookup (the speed of
    # the consume path depends on it; the instruction guard measures it)
    for obj, names in _samples(compiled):
        for name in names:
            descriptor = next(
                klass.__dict__[name] for klass in type(obj).__mro__ if name in klass.__dict__
            )
            assert type(descriptor).__name__ == "member_descriptor", (type(obj).__name__, name)


def test_other_attributes_are_still_refused(compiled):
    message = compiled.MessageBase(b"x")
    with pytest.raises(AttributeError):
        del message.no_such_field
    with pytest.raises(AttributeError):
        message.no_such_field = 1


def test_c_code_takes_a_deleted_field_as_absent(compiled):
    writer = compiled.FrameWriter()
    message = compiled.MessageBase(b"payload", content_type="text/plain")
    del message.content_type
    del message.delivery_mode
    del message.priority
    writer.publish(1, message.body, "", "rk", message, False, False, False, False)
    assert len(writer) > 0  # encoded, without the deleted properties
    del message.body
    with pytest.raises((EncodeError, TypeError)):
        writer.publish(1, message.body, "", "rk", message, False, False, False, False)

    deliver = compiled.BasicDeliver("ctag", 1, False, "ex", "rk")
    delivered = compiled.DeliveredBase(deliver, compiled.BasicProperties(), b"b", None)
    del delivered.channel
    incoming = compiled.IncomingBase(delivered)
    assert incoming._channel is None and incoming.body == b"b"
