"""The message a consumer callback or basic_get receives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..codec import BasicProperties
    from .channel import Channel


class DeliveredMessage:
    """A message from the broker: its method, properties, body and channel.

    ``delivery`` is the Basic.Deliver, Basic.GetOk or Basic.Return (or
    Basic.GetEmpty, with an empty body) that brought it.
    """

    __slots__ = ("body", "channel", "delivery", "properties")

    def __init__(
        self, delivery: Any, properties: BasicProperties, body: bytes, channel: Channel
    ) -> None:
        self.delivery = delivery
        self.properties = properties
        self.body = body
        self.channel = channel

    @property
    def delivery_tag(self) -> int | None:
        """The tag to ack with (None for a returned message)."""
        return getattr(self.delivery, "delivery_tag", None)

    @property
    def redelivered(self) -> bool | None:
        """Whether the broker delivered this message before."""
        return getattr(self.delivery, "redelivered", None)

    @property
    def exchange(self) -> str | None:
        """The exchange the message was published to."""
        return getattr(self.delivery, "exchange", None)

    @property
    def routing_key(self) -> str | None:
        """The routing key it was published with."""
        return getattr(self.delivery, "routing_key", None)

    @property
    def consumer_tag(self) -> str | None:
        """The consumer it was delivered to (Basic.Deliver only)."""
        return getattr(self.delivery, "consumer_tag", None)

    @property
    def message_count(self) -> int | None:
        """Messages left in the queue (Basic.GetOk only)."""
        return getattr(self.delivery, "message_count", None)

    def __repr__(self) -> str:
        return (
            f"<DeliveredMessage {self.delivery.name} routing_key={self.routing_key!r} "
            f"body={len(self.body)} bytes>"
        )
