"""The exceptions amqpfast raises.

One hierarchy: everything derives from :class:`AMQPError`. The codec raises
:class:`ProtocolError` for any malformed input and :class:`EncodeError` for a
value that cannot be put on the wire.
"""

from __future__ import annotations

__all__ = [
    "AMQPError",
    "EncodeError",
    "ProtocolError",
    "REPLY_TEXTS",
]

# AMQP 0-9-1 reply codes of the connection errors the codec can detect.
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
UNEXPECTED_FRAME = 505
NOT_IMPLEMENTED = 540

REPLY_TEXTS = {
    FRAME_ERROR: "FRAME_ERROR",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID",
    UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
}


class AMQPError(Exception):
    """Base class of every amqpfast exception."""


class ProtocolError(AMQPError):
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
