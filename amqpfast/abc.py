"""The abstract types and enums users annotate with, under aio-pika's names."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from abc import ABC, abstractmethod
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
)
from contextlib import AbstractAsyncContextManager
from enum import Enum, unique
from typing import TYPE_CHECKING, Any, Literal, Self, TypedDict, Union

from yarl import URL

from ._spec import MILLISECONDS, DeliveryMode
from .pool import PoolInstance
from .tools import CallbackCollection, CallbackSetType, CallbackType, OneShotCallback

if TYPE_CHECKING:
    from .core import Channel as LowLevelChannel
    from .core import Connection as LowLevelConnection
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

    @property
    @abstractmethod
    def properties(self) -> Any:
        """The content-header properties it is sent with."""

    @abstractmethod
    def __iter__(self) -> Iterator[int]:
        """The body's bytes."""

    @abstractmethod
    def lock(self) -> None:
        """Refuse changes from now on."""

    def __copy__(self) -> AbstractMessage:
        raise NotImplementedError


class AbstractIncomingMessage(AbstractMessage):
    """A message from the broker, to acknowledge."""

    # also: cluster_id, consumer_tag, delivery_tag, redelivered,
    # message_count, routing_key, exchange (read-only in amqpfast)
    __slots__ = ()

    @property
    @abstractmethod
    def channel(self) -> Any:
        """The low-level channel it came on."""

    @abstractmethod
    def process(
        self,
        requeue: bool = False,
        reject_on_redelivered: bool = False,
        ignore_processed: bool = False,
    ) -> AbstractProcessContext:
        """A context manager that acks on success and rejects on error."""

    @abstractmethod
    async def ack(self, multiple: bool = False) -> None:
        """Acknowledge it."""

    @abstractmethod
    async def reject(self, requeue: bool = False) -> None:
        """Reject it."""

    @abstractmethod
    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        """Reject one or more, requeued by default."""

    def info(self) -> MessageInfo:
        raise NotImplementedError

    @property
    @abstractmethod
    def processed(self) -> bool:
        """Whether it was acked, nacked or rejected."""


class AbstractProcessContext(AbstractAsyncContextManager[Any]):
    """The context manager :meth:`AbstractIncomingMessage.process` returns."""

    @abstractmethod
    async def __aenter__(self) -> AbstractIncomingMessage:
        """Enter: gives the message."""

    @abstractmethod
    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """Leave: ack or reject."""


class AbstractTransaction:
    """A transaction on a channel (not an ABC, as in aio-pika)."""

    state: TransactionState

    @abstractmethod
    async def select(self, timeout: TimeoutType = None) -> Any:
        """Start it."""
        raise NotImplementedError

    @abstractmethod
    async def rollback(self, timeout: TimeoutType = None) -> Any:
        """Roll it back."""
        raise NotImplementedError

    async def commit(self, timeout: TimeoutType = None) -> Any:
        """Commit it."""
        raise NotImplementedError

    async def __aenter__(self) -> AbstractTransaction:
        raise NotImplementedError

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        raise NotImplementedError


class AbstractQueue:
    """A queue (not an ABC, as in aio-pika: the methods say what a queue has)."""

    __slots__ = ()
    channel: AbstractChannel
    name: str
    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any] | None
    passive: bool
    declaration_result: Any
    close_callbacks: CallbackCollection[Any, ...]

    @abstractmethod
    def __init__(
        self,
        channel: Any,
        name: str | None,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: dict[str, Any] | None,
        passive: bool = False,
    ) -> None:
        raise NotImplementedError

    @abstractmethod
    async def declare(self, timeout: TimeoutType = None) -> Any:
        """Declare it."""
        raise NotImplementedError

    @abstractmethod
    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
    ) -> Any:
        """Bind it to an exchange."""
        raise NotImplementedError

    @abstractmethod
    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
    ) -> Any:
        """Remove a binding."""
        raise NotImplementedError

    @abstractmethod
    async def consume(
        self,
        callback: Callable[[AbstractIncomingMessage], Any],
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
    ) -> ConsumerTag:
        """Start a consumer."""
        raise NotImplementedError

    @abstractmethod
    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> Any:
        """Stop a consumer."""
        raise NotImplementedError

    @abstractmethod
    async def get(
        self, *, no_ack: bool = False, fail: bool = True, timeout: TimeoutType = 5
    ) -> AbstractIncomingMessage | None:
        """Fetch one message."""
        raise NotImplementedError

    @abstractmethod
    async def purge(self, no_wait: bool = False, timeout: TimeoutType = None) -> Any:
        """Drop the ready messages."""
        raise NotImplementedError

    @abstractmethod
    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> Any:
        """Delete it."""
        raise NotImplementedError

    @abstractmethod
    def iterator(self, **kwargs: Any) -> AbstractQueueIterator:
        """Its messages as an async iterator."""
        raise NotImplementedError


class AbstractQueueIterator(AsyncIterable[Any]):
    """Messages of a queue as an async iterator."""

    @abstractmethod
    def close(self) -> Awaitable[Any]:
        """Cancel the consumer."""

    @abstractmethod
    async def on_message(self, message: AbstractIncomingMessage) -> None:
        """Take a delivery."""

    @abstractmethod
    async def consume(self) -> None:
        """Start the consumer."""

    @abstractmethod
    def __aiter__(self) -> AbstractQueueIterator:
        """Itself."""

    @abstractmethod
    async def __aenter__(self) -> AbstractQueueIterator:
        """Start consuming."""

    @abstractmethod
    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """Close."""

    @abstractmethod
    async def __anext__(self) -> AbstractIncomingMessage:
        """The next message."""


class AbstractExchange(ABC):
    """An exchange."""

    name: str

    @abstractmethod
    def __init__(
        self,
        channel: AbstractChannel,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        auto_delete: bool = False,
        durable: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError

    @abstractmethod
    async def declare(self, timeout: TimeoutType = None) -> Any:
        """Declare it."""

    @abstractmethod
    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        *,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
    ) -> Any:
        """Route the messages of a source exchange to it."""

    @abstractmethod
    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
    ) -> Any:
        """Remove a binding."""

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

    @abstractmethod
    async def delete(self, if_unused: bool = False, timeout: TimeoutType = None) -> Any:
        """Delete it."""


class AbstractChannel(PoolInstance, ABC):
    """A channel of the high-level API."""

    QUEUE_CLASS: type[AbstractQueue]
    EXCHANGE_CLASS: type[AbstractExchange]
    close_callbacks: CallbackCollection[Any, ...]
    return_callbacks: CallbackCollection[Any, ...]
    default_exchange: AbstractExchange
    publisher_confirms: bool

    @property
    @abstractmethod
    def is_initialized(self) -> bool:
        """Whether it was opened."""

    @property
    @abstractmethod
    def is_closed(self) -> bool:
        """Whether it is closed."""

    @abstractmethod
    def close(self, exc: BaseException | None = None) -> Awaitable[None]:
        """Close it."""

    @abstractmethod
    def closed(self) -> Awaitable[Literal[True]]:
        """Finishes when it is closed."""

    @abstractmethod
    async def get_underlay_channel(self) -> Any:
        """The low-level channel."""

    @property
    @abstractmethod
    def number(self) -> int | None:
        """The channel number."""

    @abstractmethod
    async def __aenter__(self) -> Self:
        """Open it."""

    @abstractmethod
    def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> Awaitable[None]:
        """Close it."""

    @abstractmethod
    async def initialize(self, timeout: TimeoutType = None) -> None:
        """Open it."""

    @abstractmethod
    def reopen(self) -> Awaitable[None]:
        """Open it again."""

    @abstractmethod
    async def declare_exchange(
        self,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
    ) -> AbstractExchange:
        """Declare an exchange."""

    @abstractmethod
    async def get_exchange(self, name: str, *, ensure: bool = True) -> AbstractExchange:
        """An existing exchange."""

    @abstractmethod
    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool = False,
        exclusive: bool = False,
        passive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
    ) -> AbstractQueue:
        """Declare a queue."""

    @abstractmethod
    async def get_queue(self, name: str, *, ensure: bool = True) -> AbstractQueue:
        """An existing queue."""

    @abstractmethod
    async def set_qos(
        self,
        prefetch_count: int = 0,
        prefetch_size: int = 0,
        global_: bool = False,
        timeout: TimeoutType = None,
        all_channels: bool | None = None,
    ) -> Any:
        """Limit unacknowledged deliveries."""

    @abstractmethod
    async def queue_delete(
        self,
        queue_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        if_empty: bool = False,
        nowait: bool = False,
    ) -> Any:
        """Delete a queue by name."""

    @abstractmethod
    async def exchange_delete(
        self,
        exchange_name: str,
        timeout: TimeoutType = None,
        if_unused: bool = False,
        nowait: bool = False,
    ) -> Any:
        """Delete an exchange by name."""

    @abstractmethod
    def transaction(self) -> AbstractTransaction:
        """A transaction."""

    @abstractmethod
    async def flow(self, active: bool = True) -> Any:
        """Pause or resume deliveries."""

    @abstractmethod
    def __await__(self) -> Generator[Any, Any, Self]:
        """Open it."""


class AbstractConnection(PoolInstance, ABC):
    """A connection of the high-level API."""

    PARAMETERS: tuple[ConnectionParameter, ...]
    close_callbacks: CallbackCollection[Any, ...]
    connected: asyncio.Event
    transport: UnderlayConnection | None
    kwargs: Mapping[str, Any]

    @abstractmethod
    def __init__(
        self, url: URL, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any
    ) -> None:
        raise NotImplementedError

    @property
    @abstractmethod
    def is_closed(self) -> bool:
        """Whether it is closed."""

    @property
    @abstractmethod
    def close_called(self) -> bool:
        """Whether close() was called."""

    @abstractmethod
    async def close(self, exc: BaseException | None = None) -> None:
        """Close it."""

    @abstractmethod
    def closed(self) -> Awaitable[Literal[True]]:
        """Finishes when it is closed."""

    @abstractmethod
    async def connect(self, timeout: TimeoutType = None) -> None:
        """Open it."""

    @abstractmethod
    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> AbstractChannel:
        """A channel."""

    @abstractmethod
    async def ready(self) -> None:
        """Wait until it is open."""

    @abstractmethod
    async def __aenter__(self) -> Self:
        """Itself."""

    @abstractmethod
    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        """Close it."""

    @abstractmethod
    async def update_secret(
        self, new_secret: str, *, reason: str = "", timeout: TimeoutType = None
    ) -> Any:
        """Give the broker a new secret."""


class AbstractRobustQueue(AbstractQueue):
    """A queue declared, bound and consumed again after a reconnect."""

    __slots__ = ()

    @abstractmethod
    def restore(self) -> Awaitable[None]:
        """Declare, bind and consume again."""
        raise NotImplementedError

    @abstractmethod
    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> Any:
        """Bind it; ``robust``: again after a reconnect."""
        raise NotImplementedError

    @abstractmethod
    async def consume(
        self,
        callback: Callable[[AbstractIncomingMessage], Any],
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: dict[str, Any] | None = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> ConsumerTag:
        """Start a consumer; ``robust``: again after a reconnect."""
        raise NotImplementedError


class AbstractRobustExchange(AbstractExchange):
    """An exchange declared again after a reconnect."""

    @abstractmethod
    def restore(self) -> Awaitable[None]:
        """Declare and bind again."""

    @abstractmethod
    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str = "",
        *,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> Any:
        """Bind it; ``robust``: again after a reconnect."""


class AbstractRobustChannel(AbstractChannel):
    """A channel restored after a reconnect."""

    reopen_callbacks: CallbackCollection[Any, ...]

    @abstractmethod
    def reopen(self) -> Awaitable[None]:
        """Open it again."""

    @abstractmethod
    async def restore(self) -> None:
        """Open it again with what was declared on it."""

    @abstractmethod
    async def ready(self) -> None:
        """Wait until it is open and restored."""

    @abstractmethod
    async def declare_exchange(
        self,
        name: str,
        type: ExchangeType | str = ExchangeType.DIRECT,
        *,
        durable: bool = False,
        auto_delete: bool = False,
        internal: bool = False,
        passive: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> AbstractRobustExchange:
        """Declare an exchange; ``robust``: again after a reconnect."""

    @abstractmethod
    async def declare_queue(
        self,
        name: str | None = None,
        *,
        durable: bool = False,
        exclusive: bool = False,
        passive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> AbstractRobustQueue:
        """Declare a queue; ``robust``: again after a reconnect."""


class AbstractRobustConnection(AbstractConnection):
    """A connection that reconnects by itself."""

    reconnect_callbacks: CallbackCollection[Any, ...]

    @property
    @abstractmethod
    def reconnecting(self) -> bool:
        """Whether a reconnect is under way."""

    @abstractmethod
    def reconnect(self) -> Awaitable[None]:
        """Reconnect now."""

    @abstractmethod
    def channel(
        self,
        channel_number: int | None = None,
        publisher_confirms: bool = True,
        on_return_raises: bool = False,
    ) -> AbstractRobustChannel:
        """A robust channel."""


@dataclasses.dataclass(frozen=True)
class DeclarationResult:
    """Counts a queue declaration reports."""

    message_count: int
    consumer_count: int


@dataclasses.dataclass(frozen=True)
class ConnectionParameter:
    """A URL option a connection class reads: name, parser, default (as text).

    ``is_kwarg``: the value goes to ``connection.kwargs`` (and is left out
    when neither the URL nor a keyword gives it) instead of an attribute.
    """

    name: str
    parser: Callable[[str], Any]
    default: str | None = None
    is_kwarg: bool = False

    def parse(self, value: Any) -> Any:
        """``value`` parsed; the parsed default when it is None or cannot be read."""
        if value is None:
            value = self.default
            if value is None:
                return None
        try:
            return self.parser(value)
        except ValueError:
            return None if self.default is None else self.parser(self.default)


@dataclasses.dataclass(frozen=True)
class UnderlayChannel:
    """The low-level channel under a high-level one, with its close callback.

    ``close_callback`` runs once when the low-level channel closes, for
    whatever reason; :meth:`close` returns after it ran.
    """

    channel: LowLevelChannel
    close_callback: OneShotCallback

    @classmethod
    async def create(
        cls,
        connection: LowLevelConnection,
        close_callback: Callable[..., Awaitable[Any]],
        **kwargs: Any,
    ) -> UnderlayChannel:
        """Open a channel on ``connection`` (``kwargs`` go to its ``channel()``)."""
        callback = OneShotCallback(close_callback)
        channel = await connection.channel(**kwargs)
        channel.closing.add_done_callback(callback)
        return cls(channel=channel, close_callback=callback)

    async def close(self, exc: BaseException | None = None) -> None:
        """Close the channel (unless it is closed) and wait for the close callback."""
        if self.close_callback.finished.is_set():
            return
        if not self.channel.is_closed:
            await self.channel.close()
        await self.close_callback.wait()


@dataclasses.dataclass(frozen=True)
class UnderlayConnection:
    """The low-level connection under a high-level one, with its close callback."""

    connection: LowLevelConnection
    close_callback: OneShotCallback

    @classmethod
    async def make_connection(
        cls, url: URL, timeout: TimeoutType = None, **kwargs: Any
    ) -> LowLevelConnection:
        """An open low-level connection (``kwargs``: client_properties, ssl_context)."""
        from .core import Connection

        connection = Connection(url, **kwargs)
        try:
            await connection.connect(timeout)
        except BaseException:
            await connection.close()
            raise
        return connection

    @classmethod
    async def connect(
        cls,
        url: URL,
        close_callback: Callable[..., Awaitable[Any]],
        timeout: TimeoutType = None,
        **kwargs: Any,
    ) -> UnderlayConnection:
        """Connect; ``close_callback(closing)`` runs once when the connection closes."""
        connection = await cls.make_connection(url, timeout=timeout, **kwargs)
        callback = OneShotCallback(close_callback)
        connection.closing.add_done_callback(callback)
        return cls(connection=connection, close_callback=callback)

    async def ready(self) -> None:
        """Return at once: a low-level connection is open when it is made."""

    async def close(self, exc: BaseException | None = None) -> None:
        """Close the connection and wait for the close callback."""
        if self.close_callback.finished.is_set():
            return
        try:
            await self.connection.close(exc)
        finally:
            await self.close_callback.wait()


NoneType = type(None)
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
