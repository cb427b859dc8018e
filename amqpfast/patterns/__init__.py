"""Patterns on top of the object model: master/worker task queues and RPC.

The names are aio-pika's (``aio_pika.patterns``), and so are the defaults:
:class:`Master` and :class:`RPC` use pickle, so whoever can publish to their
queues can run code in the consumer; :class:`JsonMaster`,
:class:`CompressedJsonMaster` and :class:`JsonRPC` use JSON.
"""

from .base import Base, Method, Proxy
from .master import (
    CompressedJsonMaster,
    DecompressionLimitError,
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
    "DecompressionLimitError",
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
