"""The exceptions amqpfast raises.

One hierarchy: everything derives from :class:`AMQPError`. The codec raises
:class:`ProtocolError` for any malformed input and :class:`EncodeError` for a
value that cannot be put on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = [
    "REPLY_TEXTS",
    "AMQPChannelError",
    "AMQPConnectionError",
    "AMQPError",
    "AMQPException",
    "AuthenticationError",
    "ChannelAccessRefused",
    "ChannelClosed",
    "ChannelInvalidStateError",
    "ChannelLockedResource",
    "ChannelNotFoundEntity",
    "ChannelNotOpenError",
    "ChannelPreconditionFailed",
    "ConnectionChannelError",
    "ConnectionClosed",
    "ConnectionCommandInvalid",
    "ConnectionForced",
    "ConnectionFrameError",
    "ConnectionInternalError",
    "ConnectionNotAllowed",
    "ConnectionNotImplemented",
    "ConnectionProtocolError",
    "ConnectionResourceError",
    "ConnectionSyntaxError",
    "ConnectionUnexpectedFrame",
    "DeliveryError",
    "DuplicateConsumerTag",
    "EncodeError",
    "HeartbeatTimeout",
    "IncompatibleProtocolError",
    "CONNECTION_EXCEPTIONS",
    "InvalidFrameError",
    "MessageTooLarge",
    "MethodNotImplemented",
    "MessageProcessError",
    "ProbableAuthenticationError",
    "ProtocolError",
    "ProtocolSyntaxError",
    "PublishError",
    "QueueEmpty",
    "channel_error",
    "connection_error",
]

# AMQP 0-9-1 reply codes of the connection errors the codec can detect.
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_IMPLEMENTED = 540

REPLY_TEXTS = {
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    CHANNEL_ERROR: "CHANNEL_ERROR",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
}


class AMQPError(Exception):
    """Base class of every amqpfast exception."""

    #: a description with ``%`` placeholders for the arguments (as aiormq has)
    reason = "an AMQP error: %s"

    def __repr__(self) -> str:
        try:
            text = self.reason % self.args
        except (TypeError, ValueError):
            return f"<{type(self).__name__}: {self.args!r}>"
        return f"<{type(self).__name__}: {text}>"


AMQPException = AMQPError


class ProtocolSyntaxError(AMQPError):
    """The bytes on the wire break the protocol."""


class InvalidFrameError(ProtocolSyntaxError):
    """A frame that cannot be decoded, or one that came out of turn (aiormq's name)."""

    reason = "invalid frame: %r"


class ProtocolError(InvalidFrameError):
    """The peer sent bytes that break the AMQP 0-9-1 framing or syntax.

    :param reply_code: the AMQP reply code a client reports to the broker
        when it closes the connection for this error (501, 502, 505, 540 ...).
    :param message: what was wrong, in words.
    """

    def __init__(self, reply_code: int, message: str) -> None:
        super().__init__(reply_code, message)
        self.reply_code = reply_code
        self.message = message

    @property
    def reply_text(self) -> str:
        """The reply text to send in Connection.Close: the code's name and the reason."""
        name = REPLY_TEXTS.get(self.reply_code, "ERROR")
        return f"{name} - {self.message}"[:255]

    def __str__(self) -> str:
        return f"{self.reply_code} {self.message}"


class EncodeError(AMQPError, ValueError):
    """A value cannot be encoded: wrong type, out of range or too long.

    The message names the field that was wrong.
    """


# ------------------------------------------------------------ connection


class AMQPConnectionError(AMQPError, ConnectionError):
    """The connection could not be opened, or it is lost.

    A :class:`ConnectionError` too, as aiormq's class is.
    """

    reason = "connection problem: %s"

    def __str__(self) -> str:
        # not OSError's "[Errno x] y" for two arguments
        return Exception.__str__(self)


class IncompatibleProtocolError(AMQPConnectionError):
    """The broker refused AMQP 0-9-1 and answered with its own protocol header."""


class AuthenticationError(AMQPConnectionError):
    """Client and broker share no authentication mechanism, or the login was refused."""


class ProbableAuthenticationError(AuthenticationError):
    """The broker closed the connection during the handshake: most likely bad credentials."""


class HeartbeatTimeout(AMQPConnectionError):
    """Nothing came from the broker for two heartbeat intervals."""


class ConnectionClosed(AMQPConnectionError):
    """The connection is closed: by the broker (with its reply code) or the network.

    :param reply_code: the broker's AMQP reply code, or 0 for a lost socket.
    :param reply_text: the broker's explanation, or what went wrong.
    """

    def __init__(self, reply_code: int = 0, reply_text: str = "connection closed") -> None:
        super().__init__(reply_code, reply_text)
        self.reply_code = reply_code
        self.reply_text = reply_text

    def __str__(self) -> str:
        return f"({self.reply_code}) {self.reply_text}"


class ConnectionProtocolError(ProtocolError, AMQPConnectionError):
    """The broker (or something posing as it) broke the protocol: the connection ends.

    A :class:`ProtocolError` (its ``reply_code`` is the one the client
    closes the connection with) that is an :class:`AMQPConnectionError` as
    well, so code that catches connection errors sees it.

    :param reply_code: the AMQP reply code of the fault (502, 504, 506 ...).
    :param message: what was wrong, in words.
    """

    reason = "protocol error: %s %s"


class ChannelNotOpenError(ConnectionProtocolError):
    """504: a frame came on a channel the client has not opened (or has closed)."""


class MessageTooLarge(ConnectionProtocolError):
    """506: a content header announced a body larger than ``max_message_size``."""


class ConnectionForced(ConnectionClosed):
    """320: an operator or the broker's shutdown closed the connection."""


class ConnectionFrameError(ConnectionClosed):
    """501: the broker could not decode a frame we sent."""


class ConnectionSyntaxError(ConnectionClosed):
    """502: a frame we sent had illegal values."""


class ConnectionCommandInvalid(ConnectionClosed):
    """503: a method was sent out of sequence."""


class ConnectionChannelError(ConnectionClosed):
    """504: a channel was used that is not open."""


class ConnectionUnexpectedFrame(ConnectionClosed):
    """505: a frame came that the broker did not expect."""


class ConnectionResourceError(ConnectionClosed):
    """506: the broker lacks the resources to go on."""


class ConnectionNotAllowed(ConnectionClosed):
    """530: the broker does not allow what was asked (a vhost, a channel number ...)."""


class ConnectionNotImplemented(ConnectionClosed):
    """540: the broker does not implement what was asked."""


class ConnectionInternalError(ConnectionClosed):
    """541: the broker failed internally."""


_CONNECTION_ERRORS: dict[int, type[ConnectionClosed]] = {
    320: ConnectionForced,
    501: ConnectionFrameError,
    502: ConnectionSyntaxError,
    503: ConnectionCommandInvalid,
    504: ConnectionChannelError,
    505: ConnectionUnexpectedFrame,
    506: ConnectionResourceError,
    530: ConnectionNotAllowed,
    540: ConnectionNotImplemented,
    541: ConnectionInternalError,
}


def connection_error(reply_code: int, reply_text: str) -> ConnectionClosed:
    """The exception for a Connection.Close with this reply code."""
    return _CONNECTION_ERRORS.get(reply_code, ConnectionClosed)(reply_code, reply_text)


# --------------------------------------------------------------- channel


class AMQPChannelError(AMQPError):
    """A channel-level failure."""


class ChannelInvalidStateError(AMQPChannelError, RuntimeError):
    """The channel is closed (or not open yet): the call cannot be made."""


class ChannelClosed(AMQPChannelError):
    """The broker closed the channel, with its reply code and text.

    :param reply_code: the broker's AMQP reply code (0 when the client closed it).
    :param reply_text: the broker's explanation.
    """

    def __init__(self, reply_code: int = 0, reply_text: str = "channel closed") -> None:
        super().__init__(reply_code, reply_text)
        self.reply_code = reply_code
        self.reply_text = reply_text

    def __str__(self) -> str:
        return f"({self.reply_code}) {self.reply_text}"


class ChannelAccessRefused(ChannelClosed):
    """403: no permission for that entity."""


class ChannelNotFoundEntity(ChannelClosed):
    """404: the exchange or queue does not exist."""


class ChannelLockedResource(ChannelClosed):
    """405: the entity is exclusive to another connection."""


class ChannelPreconditionFailed(ChannelClosed):
    """406: a declaration does not match the existing entity, or an unknown delivery tag."""


class DuplicateConsumerTag(ChannelClosed):
    """530: the consumer tag is in use on this channel."""


_CHANNEL_ERRORS: dict[int, type[ChannelClosed]] = {
    403: ChannelAccessRefused,
    404: ChannelNotFoundEntity,
    405: ChannelLockedResource,
    406: ChannelPreconditionFailed,
}


def channel_error(reply_code: int, reply_text: str) -> ChannelClosed:
    """The exception for a Channel.Close with this reply code."""
    if reply_code == 530 and "consumer tag" in reply_text.lower():
        return DuplicateConsumerTag(reply_code, reply_text)
    return _CHANNEL_ERRORS.get(reply_code, ChannelClosed)(reply_code, reply_text)


# ------------------------------------------------------------ publishing


def _describe(frame: Any) -> str:
    """A method frame as ``Name(field=value, ...)``."""
    name = getattr(frame, "name", type(frame).__name__)
    try:
        fields = ", ".join(f"{key}={value!r}" for key, value in frame)
    except TypeError:  # not iterable: no fields to show
        fields = ""
    return f"{name}({fields})"


class DeliveryError(AMQPError):
    """The broker did not take a published message: a Basic.Nack, or a return.

    :param message: the returned message, if the broker sent it back.
    :param frame: the Basic.Nack or Basic.Return that said so.
    """

    def __init__(self, message: Any, frame: Any, *args: Any) -> None:
        super().__init__(message, frame)
        self.message = message
        self.frame = frame

    def __str__(self) -> str:
        return f"message not delivered: {_describe(self.frame)}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self}>"


class PublishError(DeliveryError):
    """A mandatory message could not be routed and came back (Basic.Return).

    Its ``args`` are the reply text and the routing key, as in aiormq.
    """

    def __init__(self, message: Any, frame: Any, *args: Any) -> None:
        AMQPError.__init__(self, frame.reply_text, frame.routing_key, *args)
        self.message = message
        self.frame = frame

    def __str__(self) -> str:
        return f"message returned: {_describe(self.frame)}"


# ------------------------------------------------------------ high level


class MessageProcessError(AMQPError):
    """A message was acked, nacked or rejected twice, or processing it failed."""


class QueueEmpty(AMQPError, asyncio.QueueEmpty):
    """Queue.get found no message (and was asked to fail)."""


class MethodNotImplemented(AMQPError):
    """The broker does not implement the method asked for."""


# What a failed connection attempt can raise: robust reconnection retries on these.
CONNECTION_EXCEPTIONS = (
    AMQPError,
    ConnectionError,
    OSError,
    RuntimeError,
    StopAsyncIteration,
)
