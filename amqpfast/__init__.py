"""amqpfast: an asyncio client for RabbitMQ (AMQP 0-9-1) with a compiled frame codec.

The names are aio-pika's: ``import amqpfast as aio_pika`` runs aio-pika code.
"""

from . import abc, patterns, pool
from ._version import __version__
from .abc import DeliveryMode, ExchangeType
from .channel import Channel
from .connection import Connection, connect
from .exceptions import AMQPError, AMQPException, EncodeError, MessageProcessError, ProtocolError
from .exchange import Exchange
from .message import IncomingMessage, Message
from .queue import Queue, QueueIterator

__all__ = [
    "AMQPError",
    "AMQPException",
    "Channel",
    "Connection",
    "DeliveryMode",
    "EncodeError",
    "Exchange",
    "ExchangeType",
    "IncomingMessage",
    "Message",
    "MessageProcessError",
    "ProtocolError",
    "Queue",
    "QueueIterator",
    "__version__",
    "abc",
    "connect",
    "patterns",
    "pool",
]
