"""Patterns on top of the object model: master/worker task queues and RPC.

The names are aio-pika's (``aio_pika.patterns``).
"""

from .base import Base, Method, Proxy
from .master import (
    CompressedJsonMaster,
    JsonMaster,
    Master,
    MessageProcessingError,
    NackMessage,
    RejectMessage,
    Worker,
)
from .rpc import RPC, JsonRPC, JsonRPCError, RPCException, RPCMessageType

__all__ = [
    "RPC",
    "Base",
    "CompressedJsonMaster",
    "JsonMaster",
    "JsonRPC",
    "JsonRPCError",
    "Master",
    "MessageProcessingError",
    "Method",
    "NackMessage",
    "Proxy",
    "RPCException",
    "RPCMessageType",
    "RejectMessage",
    "Worker",
]
