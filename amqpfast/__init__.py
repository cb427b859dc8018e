"""amqpfast: an asyncio client for RabbitMQ (AMQP 0-9-1) with a compiled frame codec."""

from ._version import __version__
from .exceptions import AMQPError, EncodeError, ProtocolError

__all__ = [
    "AMQPError",
    "EncodeError",
    "ProtocolError",
    "__version__",
]
