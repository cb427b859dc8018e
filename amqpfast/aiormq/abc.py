"""aiormq's ``abc`` module: the message class, the abstract bases, the type aliases.

:class:`DeliveredMessage` is amqpfast's own (the one every consumer
callback gets). The abstract bases have amqpfast's classes registered, so
``isinstance(channel, AbstractChannel)`` holds for an ``amqpfast.core``
channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
from abc import ABC
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from pamqp import commands as spec
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.common import FieldArray, FieldTable, FieldValue
from pamqp.header import ContentHeader
from yarl import URL

from ..core.channel import Channel
from ..core.connection import Connection
from ..core.message import DeliveredMessage

__all__ = [
    "AbstractBase",
    "AbstractChannel",
    "AbstractConnection",
    "ArgumentsType",
    "CallbackCoro",
    "ChannelRType",
    "ConfirmationFrameType",
    "ConsumerCallback",
    "ConsumerCancelCallback",
    "CoroutineType",
    "DeliveredMessage",
    "DrainResult",
    "ExceptionType",
    "FieldArray",
    "FieldTable",
    "FieldValue",
    "FrameType",
    "GetResultType",
    "ReturnCallback",
    "RpcReturnType",
    "SSLCerts",
    "TaskType",
    "TimeoutType",
    "URLorStr",
]

ExceptionType = BaseException | type[BaseException]
TimeoutType = float | int | None
URLorStr = URL | str
ArgumentsType = FieldTable
CoroutineType = Coroutine[Any, None, Any]
CallbackCoro = Coroutine[Any, Any, Any]
TaskType = asyncio.Task[Any]
DrainResult = Awaitable[None]
GetResultType = spec.Basic.GetEmpty | spec.Basic.GetOk
ConfirmationFrameType = spec.Basic.Ack | spec.Basic.Nack | spec.Basic.Reject
ChannelRType = tuple[int, spec.Channel.OpenOk]
FrameType = Frame | ContentHeader | ContentBody
ConsumerCallback = Callable[[DeliveredMessage], Any]
ReturnCallback = Callable[[DeliveredMessage], Any]
ConsumerCancelCallback = Callable[[spec.Basic.Cancel], Any]
RpcReturnType = (
    spec.Basic.CancelOk
    | spec.Basic.ConsumeOk
    | spec.Basic.GetEmpty
    | spec.Basic.GetOk
    | spec.Basic.QosOk
    | spec.Basic.RecoverOk
    | spec.Channel.CloseOk
    | spec.Channel.FlowOk
    | spec.Channel.OpenOk
    | spec.Confirm.SelectOk
    | spec.Exchange.BindOk
    | spec.Exchange.DeclareOk
    | spec.Exchange.DeleteOk
    | spec.Exchange.UnbindOk
    | spec.Queue.BindOk
    | spec.Queue.DeclareOk
    | spec.Queue.DeleteOk
    | spec.Queue.PurgeOk
    | spec.Queue.UnbindOk
    | spec.Tx.CommitOk
    | spec.Tx.RollbackOk
    | spec.Tx.SelectOk
    | None
)


@dataclasses.dataclass(frozen=True)
class SSLCerts:
    """The TLS files a URL names (aiormq reads them from its query)."""

    cert: str | None
    key: str | None
    capath: str | None
    cafile: str | None
    cadata: bytes | None
    verify: bool


class AbstractBase(ABC):  # noqa: B024 (a base to register with, nothing to implement)
    """Something with a ``closing`` future and a ``close()``: a connection or channel."""


class AbstractChannel(AbstractBase):
    """An AMQP channel (amqpfast's :class:`~amqpfast.core.Channel` is one)."""


class AbstractConnection(AbstractBase):
    """An AMQP connection (amqpfast's :class:`~amqpfast.core.Connection` is one)."""


AbstractChannel.register(Channel)
AbstractConnection.register(Connection)
