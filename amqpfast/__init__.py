"""amqpfast: an asyncio client for RabbitMQ (AMQP 0-9-1) with a compiled frame codec.

The names are aio-pika's: ``import amqpfast as aio_pika`` runs aio-pika code.
"""

from . import abc, log, patterns, pool
from ._version import __version__
from .abc import DeliveryMode, ExchangeType
from .channel import Channel
from .connection import Connection, connect
from .exceptions import AMQPError, AMQPException, EncodeError, MessageProcessError, ProtocolError
from .exchange import Exchange
from .log import logger
from .message import IncomingMessage, Message
from .queue import Queue, QueueIterator
from .robust_channel import RobustChannel
from .robust_connection import RobustConnection, connect_robust
from .robust_exchange import RobustExchange
from .robust_queue import RobustQueue

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
    "log",
    "logger",
    "patterns",
    "pool",
]
