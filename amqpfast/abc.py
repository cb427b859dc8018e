"""The abstract types and enums users annotate with, under aio-pika's names."""

from __future__ import annotations

import dataclasses
import datetime
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum, IntEnum, unique
from typing import TYPE_CHECKING, Any, TypedDict, Union

if TYPE_CHECKING:
    from .core import DeliveredMessage

__all__ = [
    "MILLISECONDS",
    "AbstractChannel",
    "AbstractConnection",
    "AbstractExchange",
    "AbstractIncomingMessage",
    "AbstractMessage",
    "AbstractProcessContext",
    "AbstractQueue",
    "AbstractQueueIterator",
    "AbstractRobustChannel",
    "AbstractRobustConnection",
    "AbstractRobustExchange",
    "AbstractRobustQueue",
    "AbstractTransaction",
    "CallbackSetType",
    "CallbackType",
    "ChannelCloseCallback",
    "ConnectionCloseCallback",
    "ConnectionParameter",
    "ConsumerTag",
    "DateType",
    "DeclarationResult",
    "DeliveryMode",
    "ExchangeParamType",
    "ExchangeType",
    "FieldValue",
    "HeadersType",
    "MessageInfo",
    "NoneType",
    "PublishResultType",
    "SSLOptions",
    "TimeoutType",
    "TransactionState",
    "UnderlayChannel",
    "UnderlayConnection",
    "get_exchange_name",
]

MILLISECONDS = 1000
TimeoutType = int | float | None
DateType = int | float | datetime.datetime | datetime.timedelta | None
ConsumerTag = str
FieldValue = Any
HeadersType = dict[str, Any]
ExchangeParamType = Union["AbstractExchange", str]
PublishResultType = Union[Any, "DeliveredMessage"]


class SSLOptions(TypedDict, total=False):
    """TLS options for connect(ssl_options=...), as aio-pika takes them."""

    cafile: str
    capath: str
    cadata: str
    keyfile: str
    certfile: str
    no_verify_ssl: int


@unique
class ExchangeType(str, Enum):  # noqa: UP042 - str() as aio-pika's gives
    """The exchange types RabbitMQ knows (plugins included)."""

    FANOUT = "fanout"
    DIRECT = "direct"
    TOPIC = "topic"
    HEADERS = "headers"
    X_DELAYED_MESSAGE = "x-delayed-message"
    X_CONSISTENT_HASH = "x-consistent-hash"
    X_MODULUS_HASH = "x-modulus-hash"


@unique
class DeliveryMode(IntEnum):
    """Whether the broker writes a message to disk."""

    NOT_PERSISTENT = 1
    PERSISTENT = 2


@unique
class TransactionState(str, Enum):  # noqa: UP042 - str() as aio-pika's gives
    """Where a transaction stands."""

    CREATED = "created"
    COMMITED = "commited"
    ROLLED_BACK = "rolled back"
    STARTED = "started"


class MessageInfo(TypedDict, total=False):
    """What :meth:`Message.info` returns."""

    app_id: str | None
    body_size: int
    cluster_id: str | None
    consumer_tag: str | None
    content_encoding: str | None
    content_type: str | None
    correlation_id: str | None
    delivery_mode: DeliveryMode
    delivery_tag: int | None
    exchange: str | None
    expiration: DateType
    headers: HeadersType
    message_id: str | None
    priority: int | None
    redelivered: bool | None
    routing_key: str | None
    reply_to: str | None
    timestamp: datetime.datetime | None
    type: str
    user_id: str | None


class AbstractMessage(ABC):
    """A message to publish."""

    __slots__ = ()
    body: bytes
    body_size: int
    headers: HeadersType
    content_type: str | None
    content_encoding: str | None
    delivery_mode: DeliveryMode
    priority: int | None
    correlation_id: str | None
    reply_to: str | None
    expiration: DateType
    message_id: str | None
    timestamp: datetime.datetime | None
    type: str | None
    user_id: str | None
    app_id: str | None

    @abstractmethod
    def info(self) -> MessageInfo:
        """The message's properties as a dict."""

    @property
    @abstractmethod
    def locked(self) -> bool:
        """Whether the message can no longer be changed."""

    @abstractmethod
    def lock(self) -> None:
        """Refuse changes from now on."""


class AbstractIncomingMessage(AbstractMessage):
    """A message from the broker, to acknowledge."""

    __slots__ = ()
    cluster_id: str | None

    @property
    @abstractmethod
    def delivery_tag(self) -> int | None:
        """The tag to acknowledge with."""

    @property
    @abstractmethod
    def redelivered(self) -> bool | None:
        """Whether the broker delivered it before."""

    @property
    @abstractmethod
    def exchange(self) -> str | None:
        """The exchange it was published to."""

    @property
    @abstractmethod
    def routing_key(self) -> str | None:
        """The routing key it was published with."""

    @property
    @abstractmethod
    def consumer_tag(self) -> str | None:
        """The consumer it came to."""

    @property
    @abstractmethod
    def message_count(self) -> int | None:
        """Messages left in the queue (Basic.Get only)."""

    @abstractmethod
    async def ack(self, multiple: bool = False) -> None:
        """Acknowledge it."""

    @abstractmethod
    async def reject(self, requeue: bool = False) -> None:
        """Reject it."""

    @abstractmethod
    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        """Reject one or more, requeued by default."""

    @abstractmethod
    def process(
        self,
        requeue: bool = False,
        reject_on_redelivered: bool = False,
        ignore_processed: bool = False,
    ) -> AbstractProcessContext:
        """A context manager that acks on success and rejects on error."""


class AbstractProcessContext(ABC):
    """The context manager :meth:`AbstractIncomingMessage.process` returns."""

    @abstractmethod
    async def __aenter__(self) -> AbstractIncomingMessage:
        """Enter: gives the message."""

    @abstractmethod
    async def __aexit__(self, *exc_info: Any) -> None:
        """Leave: ack or reject."""


class AbstractTransaction(ABC):
    """A transaction on a channel."""

    @abstractmethod
    async def select(self, timeout: TimeoutType = None) -> Any:
        """Start it."""

    @abstractmethod
    async def commit(self, timeout: TimeoutType = None) -> Any:
        """Commit it."""

    @abstractmethod
    async def rollback(self, timeout: TimeoutType = None) -> Any:
        """Roll it back."""


class AbstractExchange(ABC):
    """An exchange."""

    name: str

    @abstractmethod
    async def publish(
        self,
        message: AbstractMessage,
        routing_key: str,
        *,
        mandatory: bool = True,
        immediate: bool = False,
        timeout: TimeoutType = None,
    ) -> Any:
        """Publish a message."""


class AbstractQueue(ABC):
    """A queue."""

    name: str

    @abstractmethod
    async def consume(
        self,
        callback: Any,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
    ) -> ConsumerTag:
        """Start a consumer."""


class AbstractQueueIterator(ABC):
    """Messages of a queue as an async iterator."""

    @abstractmethod
    def __aiter__(self) -> AbstractQueueIterator:
        """Itself."""

    @abstractmethod
    async def __anext__(self) -> AbstractIncomingMessage:
        """The next message."""


class AbstractChannel(ABC):
    """A channel of the high-level API."""

    @property
    @abstractmethod
    def is_closed(self) -> bool:
        """Whether it is closed."""


class AbstractConnection(ABC):
    """A connection of the high-level API."""

    @property
    @abstractmethod
    def is_closed(self) -> bool:
        """Whether it is closed."""


class AbstractRobustExchange(AbstractExchange):
    """An exchange declared again after a reconnect."""


class AbstractRobustQueue(AbstractQueue):
    """A queue declared, bound and consumed again after a reconnect."""


class AbstractRobustChannel(AbstractChannel):
    """A channel restored after a reconnect."""


class AbstractRobustConnection(AbstractConnection):
    """A connection that reconnects by itself."""


@dataclasses.dataclass(frozen=True)
class DeclarationResult:
    """Counts a queue declaration reports."""

    message_count: int
    consumer_count: int


@dataclasses.dataclass(frozen=True)
class ConnectionParameter:
    """A URL option: its name, how it is read, its default (as text)."""

    name: str
    parser: Callable[[str], Any]
    default: str | None = None
    is_kwarg: bool = False


@dataclasses.dataclass
class UnderlayChannel:
    """The low-level channel under a high-level one (aio-pika's name for it)."""

    channel: Any
    close_callback: Any = None


@dataclasses.dataclass
class UnderlayConnection:
    """The low-level connection under a high-level one (aio-pika's name for it)."""

    connection: Any
    close_callback: Any = None


NoneType = type(None)
CallbackType = Callable[..., Any]
CallbackSetType = set[CallbackType]
ChannelCloseCallback = Callable[[AbstractChannel | None, BaseException | None], Any]
ConnectionCloseCallback = Callable[[AbstractConnection | None, BaseException | None], Any]


def get_exchange_name(value: ExchangeParamType | None) -> str:
    """The name of an exchange given as an object or a name ("" for None)."""
    if isinstance(value, AbstractExchange):
        return value.name
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    raise ValueError(f"invalid exchange: {value!r}")
