"""amqpfast: an asyncio client for RabbitMQ (AMQP 0-9-1) with a compiled frame codec.

The names are aio-pika's: ``import amqpfast as aio_pika`` runs aio-pika code.
"""

import logging

from . import abc, patterns, pool
from ._version import __version__
from .abc import DeliveryMode, ExchangeType
from .channel import Channel
from .connection import Connection, connect
from .exceptions import AMQPError, AMQPException, EncodeError, MessageProcessError, ProtocolError
from .exchange import Exchange
from .message import IncomingMessage, Message
from .queue import Queue, QueueIterator
from .robust_channel import RobustChannel
from .robust_connection import RobustConnection, connect_robust
from .robust_exchange import RobustExchange
from .robust_queue import RobustQueue

# The library's loggers are under "amqpfast"; the application decides where
# they go (no output unless it configures logging).
logger = logging.getLogger("amqpfast")
logger.addHandler(logging.NullHandler())

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
    "RobustChannel",
    "RobustConnection",
    "RobustExchange",
    "RobustQueue",
    "__version__",
    "abc",
    "connect",
    "connect_robust",
    "logger",
    "patterns",
    "pool",
]
