"""The low-level API: a connection and channels with the AMQP methods by name."""

from .channel import Channel
from .connection import Connection, ConnectionTimeout, connect
from .message import DeliveredMessage

__all__ = ["Channel", "Connection", "ConnectionTimeout", "DeliveredMessage", "connect"]
