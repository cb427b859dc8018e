"""A queue that is declared, bound and consumed again after a reconnect."""

from __future__ import annotations

import uuid
import weakref
from typing import TYPE_CHECKING, Any

from pamqp import commands as spec

from .abc import AbstractRobustQueue, ConsumerTag, ExchangeParamType, TimeoutType, get_exchange_name
from .queue import Callback, Queue, QueueIterator
from .tools import _warn_channel_argument

if TYPE_CHECKING:
    from .channel import Channel
    from .core import Channel as LowLevelChannel

__all__ = ["RobustQueue", "RobustQueueIterator"]

Arguments = dict[str, Any] | None


class RobustQueue(Queue, AbstractRobustQueue):
    """A :class:`Queue` that remembers its bindings and consumers.

    A queue declared without a name gets one made here (``amq_<hex>``), not
    by the broker, as in aio-pika: the broker refuses to declare its own
    ``amq.*`` names again, so only a name of ours can be restored, and a queue
    that outlived the connection is found again with its messages.
    """

    def __init__(
        self,
        channel: Channel,
        name: str | None,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Arguments = None,
        passive: bool = False,
    ) -> None:
        name = name or f"amq_{uuid.uuid4().hex}"
        super().__init__(channel, name, durable, exclusive, auto_delete, arguments, passive)
        # (exchange name, routing key or None: the queue's name, whatever
        # it is after a restore) -> arguments
        self._bindings: dict[tuple[str, str | None], Arguments] = {}
        # consumer tag -> (callback, consume keyword arguments)
        self._consumers: dict[ConsumerTag, tuple[Callback, dict[str, Any]]] = {}
        self._iterators: weakref.WeakSet[RobustQueueIterator] = weakref.WeakSet()

    async def bind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        *,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> spec.Queue.BindOk:
        """Bind to an exchange; ``robust``: bind again after a reconnect."""
        result = await super().bind(exchange, routing_key, arguments=arguments, timeout=timeout)
        if robust:
            self._bindings[(get_exchange_name(exchange), routing_key)] = arguments
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Queue.UnbindOk:
        """Remove a binding, for good."""
        result = await super().unbind(exchange, routing_key, arguments, timeout)
        name = get_exchange_name(exchange)
        self._bindings.pop((name, routing_key), None)
        if routing_key in (None, self.name):  # either spelling of the default key
            self._bindings.pop((name, None), None)
            self._bindings.pop((name, self.name), None)
        return result

    async def consume(
        self,
        callback: Callback,
        no_ack: bool = False,
        exclusive: bool = False,
        arguments: Arguments = None,
        consumer_tag: ConsumerTag | None = None,
        timeout: TimeoutType = None,
        robust: bool = True,
    ) -> ConsumerTag:
        """Start a consumer; ``robust``: start it again (same tag) after a reconnect."""
        tag = await super().consume(
            callback,
            no_ack=no_ack,
            exclusive=exclusive,
            arguments=arguments,
            consumer_tag=consumer_tag,
            timeout=timeout,
        )
        if robust:
            options = {"no_ack": no_ack, "exclusive": exclusive, "arguments": arguments}
            self._consumers[tag] = (callback, options)
        return tag

    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> spec.Basic.CancelOk | None:
        """Stop a consumer, for good."""
        self._consumers.pop(consumer_tag, None)
        return await super().cancel(consumer_tag, timeout=timeout, nowait=nowait)

    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> spec.Queue.DeleteOk:
        """Delete the queue; it is not declared again after a reconnect."""
        result = await super().delete(if_unused=if_unused, if_empty=if_empty, timeout=timeout)
        self._consumers.clear()
        self.channel._forget_queue(self)  # type: ignore[attr-defined]
        return result

    def iterator(self, **kwargs: Any) -> RobustQueueIterator:
        """The messages as an async iterator that goes on after a reconnect."""
        iterator = RobustQueueIterator(self, **kwargs)
        self._iterators.add(iterator)
        return iterator

    def _on_connection_lost(self) -> None:
        for iterator in list(self._iterators):
            iterator._drop_buffered()

    async def restore(self, channel: Any = None) -> None:
        """Declare, bind and consume again (on the current channel).

        :param channel: ignored (deprecated).
        """
        _warn_channel_argument(channel)
        await self.restore_declaration()
        await self.restore_bindings()
        await self.restore_consumers()

    async def _probe(self, channel: LowLevelChannel) -> None:
        """Declare the queue and bind it again on ``channel``, a channel of its own.

        Run before the consumers the broker cancelled are started again: a
        queue declared with ``passive=True`` (someone else's) raises
        ChannelNotFoundEntity until it exists again; any other is declared
        (again) with its parameters and bindings. A failure closes ``channel``
        only.
        """
        await channel.queue_declare(
            self.name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=self.arguments,
            passive=self.passive,
            timeout=5,
        )
        for (exchange, routing_key), arguments in tuple(self._bindings.items()):
            await channel.queue_bind(
                self.name,
                exchange=exchange,
                routing_key=self.name if routing_key is None else routing_key,
                arguments=arguments,
                timeout=5,
            )

    async def restore_declaration(self) -> None:
        """Declare again, under the same name."""
        await self.declare()

    async def restore_bindings(self) -> None:
        """Bind again (after every exchange is declared)."""
        for (exchange, routing_key), arguments in tuple(self._bindings.items()):
            await Queue.bind(self, exchange, routing_key, arguments=arguments)

    async def restore_consumers(self) -> None:
        """Start the consumers again, with their tags, callbacks and options."""
        for tag, (callback, options) in tuple(self._consumers.items()):
            await Queue.consume(self, callback, consumer_tag=tag, **options)


class RobustQueueIterator(QueueIterator):
    """A :class:`QueueIterator` that waits through a reconnect instead of ending.

    It ends when it is closed, its channel is closed for good, or the
    connection is closed.
    """

    def __init__(self, queue: Queue, **kwargs: Any) -> None:
        super().__init__(queue, **kwargs)
        connection = getattr(queue.channel, "_connection", None)
        if connection is not None:
            self._wake_up_on(connection.closed(), self._on_connection_closed)

    def _on_connection_closed(self, _future: Any) -> None:
        if not self._closed.done():
            self._closed.set_result(True)

    def _drop_buffered(self) -> None:
        # Fetched on the old connection: they cannot be acked any more and
        # the broker delivers them again.
        self._queue.clear()
