"""The AMQP 0-9-1 frame codec: the compiled one when it is built, else its twin.

``AMQPFAST_NO_EXTENSIONS=1`` selects the pure-Python twin; ``IMPLEMENTATION``
says which one is active ("c" or "python"). Type checkers see the twin.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import TYPE_CHECKING

NO_EXTENSIONS = (
    os.environ.get("AMQPFAST_NO_EXTENSIONS", "") not in ("", "0")
    or platform.python_implementation() != "CPython"
)

if TYPE_CHECKING or NO_EXTENSIONS:
    from . import _codec_py as _impl

    _why = (
        "AMQPFAST_NO_EXTENSIONS is set"
        if platform.python_implementation() == "CPython"
        else f"{platform.python_implementation()} runs the pure-Python codec"
    )
else:
    try:
        from . import _codec as _impl  # type: ignore[no-redef]

        _why = "compiled"
    except ImportError as missing:  # not built: the twin serves
        from . import _codec_py as _impl

        _why = f"the compiled codec is not there ({missing})"

IMPLEMENTATION = _impl.IMPLEMENTATION
# once, when amqpfast is first imported: which codec runs, and why
logging.getLogger("amqpfast.codec").debug("codec: %s (%s)", IMPLEMENTATION, _why)
BasicAck = _impl.BasicAck
BasicDeliver = _impl.BasicDeliver
BasicGetOk = _impl.BasicGetOk
BasicNack = _impl.BasicNack
BasicProperties = _impl.BasicProperties
BasicPublish = _impl.BasicPublish
BasicReject = _impl.BasicReject
BasicReturn = _impl.BasicReturn
ContentMessage = _impl.ContentMessage
DeliveredBase = _impl.DeliveredBase
Finished = _impl.Finished
FrameReader = _impl.FrameReader
FrameWriter = _impl.FrameWriter
Heartbeat = _impl.Heartbeat
IncomingBase = _impl.IncomingBase
MessageBase = _impl.MessageBase
MethodFrame = _impl.MethodFrame
ProtocolHeader = _impl.ProtocolHeader
decode_table = _impl.decode_table
encode_table = _impl.encode_table
new_message_id = _impl.new_message_id
run_coroutines = _impl.run_coroutines

__all__ = [
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "BasicAck",
    "BasicDeliver",
    "BasicGetOk",
    "BasicNack",
    "BasicProperties",
    "BasicPublish",
    "BasicReject",
    "BasicReturn",
    "ContentMessage",
    "DeliveredBase",
    "Finished",
    "FrameReader",
    "FrameWriter",
    "Heartbeat",
    "IncomingBase",
    "MessageBase",
    "MethodFrame",
    "ProtocolHeader",
    "decode_table",
    "encode_table",
    "new_message_id",
    "run_coroutines",
]
