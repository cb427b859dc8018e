"""The message a consumer callback or basic_get receives."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pamqp.header import ContentHeader

from ..codec import BasicProperties, DeliveredBase

if TYPE_CHECKING:
    from .channel import Channel


class DeliveredMessage(DeliveredBase):
    """A message from the broker: its method, content header, body and channel.

    ``DeliveredMessage(delivery, header=None, body=b"", channel=None)``, shaped as
    aiormq's (``delivery``, ``header``, ``body``, ``channel``) with ``header`` a
    pamqp ``ContentHeader`` whose ``properties`` are the message's. The codec
    passes the decoded properties in the header's place instead; the
    ``ContentHeader`` is then made only when someone asks for ``header``.
    ``properties`` is the same object as ``header.properties`` either way.

    ``delivery`` is the Basic.Deliver, Basic.GetOk or Basic.Return (or
    Basic.GetEmpty, with an empty body) that brought it; ``channel`` the
    channel it came on (None for a message built by hand). Made in C
    (:class:`amqpfast.codec.DeliveredBase`).
    """

    __slots__ = ()
    delivery: Any
    properties: Any
    body: bytes
    channel: Channel  # None only in a message built by hand
    _header: ContentHeader | None

    def _take_header(self, header: Any) -> None:
        if header is None:
            self.properties = BasicProperties()
        elif hasattr(header, "properties"):  # a ContentHeader, as aiormq builds them
            self._header = header
            self.properties = header.properties
        else:  # properties of some other kind (pamqp's) in the header's place
            self.properties = header

    @property
    def header(self) -> ContentHeader:
        """The content header: body size and ``properties`` (made when first asked for)."""
        header = self._header
        if header is None:
            header = self._header = ContentHeader(0, len(self.body), self.properties)
        return header

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

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DeliveredMessage):
            return NotImplemented
        return (
            self.delivery == other.delivery
            and self.properties == other.properties
            and self.body == other.body
            and self.channel is other.channel
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<DeliveredMessage {self.delivery.name} routing_key={self.routing_key!r} "
            f"body={len(self.body)} bytes>"
        )
