"""Messages: :class:`Message` to publish, :class:`IncomingMessage` from the broker."""

from __future__ import annotations

import logging
import operator
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from . import _spec
from .abc import (
    MILLISECONDS,
    AbstractIncomingMessage,
    AbstractMessage,
    AbstractProcessContext,
    DateType,
    DeliveryMode,
    HeadersType,
    MessageInfo,
)
from .codec import BasicProperties, IncomingBase, MessageBase
from .core import Channel as _LowChannel
from .core._drive import DONE
from .exceptions import ChannelInvalidStateError, MessageProcessError

_DELIVERY_MODES = _spec.DELIVERY_MODES
log = logging.getLogger("amqpfast.message")

__all__ = ["IncomingMessage", "Message", "ProcessContext", "ReturnedMessage"]

# the API's conversions live with the codec, which makes messages; these are their
# names here
encode_expiration = _spec.encode_expiration
encode_timestamp = _spec.encode_timestamp


def decode_expiration(value: str | None) -> float | None:
    """The expiration property (milliseconds, text) in seconds."""
    return None if value is None else float(value) / MILLISECONDS


class Message(MessageBase, AbstractMessage):
    """A message to publish: ``Message(body, *, headers=None, ...)``.

    - ``body``: the bytes to send.
    - ``headers``: a field table (dict).
    - ``content_type``: MIME type of the body.
    - ``content_encoding``: MIME encoding of the body.
    - ``delivery_mode``: :class:`DeliveryMode` (default NOT_PERSISTENT).
    - ``priority``: 0..255 (default 0).
    - ``correlation_id``: ties a reply to its request.
    - ``reply_to``: where to send a reply.
    - ``expiration``: time to live: seconds, a timedelta or a datetime.
    - ``message_id``: an id of the application's.
    - ``timestamp``: a datetime, seconds since the epoch or a timedelta from now.
    - ``type``: the message type name.
    - ``user_id``: the publishing user (checked by RabbitMQ).
    - ``app_id``: the publishing application.

    The arguments are keyword-only after ``body``. The fields, the
    constructor and the lock are the codec's
    (:class:`amqpfast.codec.MessageBase`): the writer encodes a Message's
    properties from them directly.
    """

    __slots__ = ()

    @property
    def locked(self) -> bool:
        """Whether the message can no longer be changed."""
        return self._locked

    def lock(self) -> None:
        """Refuse changes from now on."""
        self._locked = True

    @property
    def properties(self) -> BasicProperties:
        """The content-header properties this message is sent with."""
        # positional, in BasicProperties' order: half the cost of keywords
        return BasicProperties(
            self.content_type,
            self.content_encoding,
            self.headers,
            self.delivery_mode,
            self.priority,
            self.correlation_id,
            self.reply_to,
            None if self.expiration is None else encode_expiration(self.expiration),
            self.message_id,
            self.timestamp,
            self.type,  # message_type
            self.user_id,
            self.app_id,
        )

    def info(self) -> MessageInfo:
        """The message's properties as a dict."""
        return MessageInfo(
            app_id=self.app_id,
            body_size=self.body_size,
            cluster_id=None,
            consumer_tag=None,
            content_encoding=self.content_encoding,
            content_type=self.content_type,
            correlation_id=self.correlation_id,
            delivery_mode=self.delivery_mode,
            delivery_tag=None,
            exchange=None,
            expiration=self.expiration,
            headers=self.headers,
            message_id=self.message_id,
            priority=self.priority,
            redelivered=None,
            reply_to=self.reply_to,
            routing_key=None,
            timestamp=self.timestamp,
            type=str(self.type),
            user_id=self.user_id,
        )

    @property
    def headers_raw(self) -> HeadersType:
        """The headers (deprecated, as in aio-pika: use :attr:`headers`)."""
        warnings.warn(
            f"{type(self).__name__}.headers_raw is deprecated: read .headers",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.headers

    def __iter__(self) -> Iterator[int]:
        return iter(self.body)

    def __repr__(self) -> str:
        return f"{type(self).__name__}:{self.info()!r}"

    def __copy__(self) -> Message:
        return Message(
            body=self.body,
            headers=self.headers,
            content_type=self.content_type,
            content_encoding=self.content_encoding,
            delivery_mode=self.delivery_mode,
            priority=self.priority,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            expiration=self.expiration,
            message_id=self.message_id,
            timestamp=self.timestamp,
            type=self.type,
            user_id=self.user_id,
            app_id=self.app_id,
        )


def _from_properties(name: str, default: Any = None) -> property:
    # IncomingMessage reads its properties from the decoded content header
    # when asked, instead of copying all fourteen for every delivery.
    get: Callable[[IncomingMessage], Any]
    if default is None:
        get = operator.attrgetter(f"_properties.{name}")  # in C: no Python frame per read
    else:

        def get(self: IncomingMessage) -> Any:
            value = getattr(self._properties, name)
            return default if value is None else value

    def set_(self: IncomingMessage, value: Any) -> None:
        setattr(self._properties, name, value)

    return property(get, set_)


class IncomingMessage(IncomingBase, Message, AbstractIncomingMessage):
    """A message from the broker: the properties of :class:`Message`, and acknowledgement.

    ``IncomingMessage(message, no_ack=False)``: ``message`` is the low-level
    delivery; with ``no_ack`` the consumer does not acknowledge (the message is
    processed already). Made in C (:class:`amqpfast.codec.IncomingBase`): the
    properties are read from the delivery's content header when asked for.
    """

    __slots__ = ()
    _channel: _LowChannel
    _properties: BasicProperties

    # the properties, read from the content header
    content_type = _from_properties("content_type")
    content_encoding = _from_properties("content_encoding")
    correlation_id = _from_properties("correlation_id")
    reply_to = _from_properties("reply_to")
    message_id = _from_properties("message_id")
    user_id = _from_properties("user_id")
    app_id = _from_properties("app_id")
    cluster_id = _from_properties("cluster_id")
    priority = _from_properties("priority", 0)
    timestamp = _from_properties("timestamp")
    type = _from_properties("message_type")

    @property
    def headers(self) -> HeadersType:
        """The headers table (an empty dict when the message had none)."""
        headers = self._properties.headers
        if headers is None:
            headers = self._properties.headers = {}
        return headers

    @headers.setter
    def headers(self, value: HeadersType) -> None:
        self._properties.headers = value

    @property
    def delivery_mode(self) -> DeliveryMode:
        """How the message was published (NOT_PERSISTENT when it did not say)."""
        mode = _DELIVERY_MODES.get(self._properties.delivery_mode)  # a dict, not an Enum call
        return mode if mode is not None else _spec.delivery_mode(self._properties.delivery_mode)

    @delivery_mode.setter
    def delivery_mode(self, value: int) -> None:
        self._properties.delivery_mode = int(value)

    @property
    def expiration(self) -> float | None:
        """The time to live it was published with, in seconds."""
        return decode_expiration(self._properties.expiration)

    @expiration.setter
    def expiration(self, value: DateType) -> None:
        self._properties.expiration = encode_expiration(value)

    # the delivery
    @property
    def delivery_tag(self) -> int | None:
        """The tag to acknowledge with."""
        return getattr(self._delivery, "delivery_tag", None)

    @property
    def redelivered(self) -> bool | None:
        """Whether the broker delivered it before."""
        return getattr(self._delivery, "redelivered", None)

    @property
    def exchange(self) -> str | None:
        """The exchange it was published to."""
        return getattr(self._delivery, "exchange", None)

    @property
    def routing_key(self) -> str | None:
        """The routing key it was published with."""
        return getattr(self._delivery, "routing_key", None)

    @property
    def consumer_tag(self) -> str | None:
        """The consumer it came to (None for Basic.Get)."""
        return getattr(self._delivery, "consumer_tag", None)

    @property
    def message_count(self) -> int | None:
        """Messages left in the queue (Basic.Get only)."""
        return getattr(self._delivery, "message_count", None)

    @property
    def channel(self) -> _LowChannel:
        """The low-level channel it came on.

        :raises ChannelInvalidStateError: that channel is closed.
        """
        if self._channel.is_closed:
            raise ChannelInvalidStateError(f"{self._channel!r} is closed")
        return self._channel

    @property
    def processed(self) -> bool:
        """Whether it was acked, nacked or rejected (or needs no ack)."""
        return self._processed

    def _settle(self) -> _LowChannel:
        if self._no_ack:
            raise TypeError('Can\'t ack a message consumed with "no_ack"')
        if self._processed:
            raise MessageProcessError("Message already processed", self)
        channel = self._channel  # as the channel property, without its call
        if channel.is_closed:
            raise ChannelInvalidStateError(f"{channel!r} is closed")
        return channel

    async def ack(self, multiple: bool = False) -> None:
        """Acknowledge the message (all up to it with ``multiple``).

        :raises MessageProcessError: it was acked, nacked or rejected already.
        """
        channel = self._channel
        if self._no_ack or self._processed or channel.is_closed:
            self._settle()  # raises why it cannot (the checks inline: every message acks)
        sent = channel.basic_ack(self._delivery.delivery_tag, multiple)
        if sent is not DONE:  # another channel type (a test double, say) may really wait
            await sent
        self._mark_processed()

    async def reject(self, requeue: bool = False) -> None:
        """Reject the message; dropped (or dead-lettered) unless ``requeue``."""
        sent = self._settle().basic_reject(self._delivery.delivery_tag, requeue)
        if sent is not DONE:
            await sent
        self._mark_processed()

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        """Reject the message (all up to it with ``multiple``), requeued by default."""
        sent = self._settle().basic_nack(self._delivery.delivery_tag, multiple, requeue)
        if sent is not DONE:
            await sent
        self._mark_processed()

    def process(
        self,
        requeue: bool = False,
        reject_on_redelivered: bool = False,
        ignore_processed: bool = False,
    ) -> ProcessContext:
        """Ack when the block succeeds, reject when it raises.

        :param requeue: requeue a message rejected for an error.
        :param reject_on_redelivered: reject (without requeue) a message
            that failed and had been delivered before.
        :param ignore_processed: let the block ack or reject by itself.
        """
        # made without calling the class: a call with keywords builds a dict
        # and goes through __init__ as a Python slot (half the cost of this)
        context = _new_context(ProcessContext)
        context.message = self
        context.requeue = requeue
        context.reject_on_redelivered = reject_on_redelivered
        context.ignore_processed = ignore_processed
        return context

    def info(self) -> MessageInfo:
        """The message's properties and delivery as a dict."""
        info = super().info()
        info["cluster_id"] = self.cluster_id
        info["consumer_tag"] = self.consumer_tag
        info["delivery_tag"] = self.delivery_tag
        info["exchange"] = self.exchange
        info["redelivered"] = self.redelivered
        info["routing_key"] = self.routing_key
        return info


class ReturnedMessage(IncomingMessage):
    """A mandatory message the broker could not route and sent back."""

    __slots__ = ()


_new_context = object.__new__


class ProcessContext(AbstractProcessContext):
    """What :meth:`IncomingMessage.process` returns."""

    __slots__ = ("ignore_processed", "message", "reject_on_redelivered", "requeue")

    def __init__(
        self,
        message: IncomingMessage,
        *,
        requeue: bool,
        reject_on_redelivered: bool,
        ignore_processed: bool,
    ) -> None:
        self.message = message
        self.requeue = requeue
        self.reject_on_redelivered = reject_on_redelivered
        self.ignore_processed = ignore_processed

    async def __aenter__(self) -> IncomingMessage:
        return self.message

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        message = self.message
        if self.ignore_processed and message.processed:
            return
        if exc_type is None:
            await message.ack()
            return
        try:
            if self.reject_on_redelivered and message.redelivered:
                log.info("message %r was redelivered and is rejected", message)
                await message.reject(requeue=False)
            else:
                await message.reject(requeue=self.requeue)
        except ChannelInvalidStateError:
            # the channel is gone: nothing to reject; the block's error goes on
            # (aio-pika's wording of the warning, which programs may look for)
            log.warning("Reject is not sent since channel is closed")
