"""A queue that is declared, bound and consumed again after a reconnect."""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Literal, overload

from pamqp import commands as spec

from .abc import AbstractRobustQueue, ConsumerTag, ExchangeParamType, TimeoutType, get_exchange_name
from .exceptions import ChannelInvalidStateError
from .message import IncomingMessage
from .queue import Callback, Queue, QueueIterator
from .tools import _warn_channel_argument, weak_method_callback

if TYPE_CHECKING:
    from .channel import Channel
    from .core import Channel as LowLevelChannel
    from .robust_channel import RobustChannel

log = logging.getLogger("amqpfast.robust")

__all__ = ["RobustQueue", "RobustQueueIterator"]

Arguments = dict[str, Any] | None


class RobustQueue(Queue, AbstractRobustQueue):
    """A :class:`Queue` that remembers its bindings and consumers.

    A queue declared without a name gets one made here (``amq_<hex>``), not
    by the broker, as in aio-pika: the broker refuses to declare its own
    ``amq.*`` names again, so only a name of ours can be restored, and a queue
    that outlived the connection is found again with its messages.

    A queue its channel did not declare (``get_queue(name, ensure=False)``,
    this constructor) is restored from its first robust :meth:`bind` or
    :meth:`consume` on: declared passively (it is someone else's), unless
    :meth:`declare` declared it. One declared with ``robust=False`` is not.

    During a reconnect its calls that reach the broker wait for the restore
    of the channel, within their ``timeout``.
    """

    channel: RobustChannel

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
        self._declared = False  # declared by declare() (else restored passively)
        self._adoptable = True  # False: declared with robust=False, never restored

    def _adopted(self) -> None:
        # a robust binding or consumer: the channel restores this queue from now on
        if self._adoptable:
            self.channel._adopt_queue(self)

    def _restores(self, consumer_tag: ConsumerTag) -> bool:
        """Whether a reconnect starts this consumer again."""
        return consumer_tag in self._consumers and self.channel._knows_queue(self)

    async def declare(self, timeout: TimeoutType = None) -> spec.Queue.DeclareOk:
        """Declare the queue (see :meth:`Queue.declare`); waits for a restore first."""
        timeout = await self.channel._wait_ready(timeout)
        result = await super().declare(timeout)
        if not self.passive:
            self._declared = True
        return result

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
        timeout = await self.channel._wait_ready(timeout)
        result = await super().bind(exchange, routing_key, arguments=arguments, timeout=timeout)
        if robust:
            self._bindings[(get_exchange_name(exchange), routing_key)] = arguments
            self._adopted()
        return result

    async def unbind(
        self,
        exchange: ExchangeParamType,
        routing_key: str | None = None,
        arguments: Arguments = None,
        timeout: TimeoutType = None,
    ) -> spec.Queue.UnbindOk:
        """Remove a binding, for good."""
        timeout = await self.channel._wait_ready(timeout)
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
        timeout = await self.channel._wait_ready(timeout)
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
            self._adopted()
        return tag

    async def cancel(
        self, consumer_tag: ConsumerTag, timeout: TimeoutType = None, nowait: bool = False
    ) -> spec.Basic.CancelOk | None:
        """Stop a consumer, for good."""
        # forgotten first: not started again, even if the cancel fails
        self._consumers.pop(consumer_tag, None)
        timeout = await self.channel._wait_ready(timeout)
        return await super().cancel(consumer_tag, timeout=timeout, nowait=nowait)

    @overload
    async def get(
        self, *, no_ack: bool = False, fail: Literal[True] = ..., timeout: TimeoutType = ...
    ) -> IncomingMessage: ...

    @overload
    async def get(
        self, *, no_ack: bool = False, fail: Literal[False] = ..., timeout: TimeoutType = ...
    ) -> IncomingMessage | None: ...

    async def get(
        self, *, no_ack: bool = False, fail: bool = True, timeout: TimeoutType = 5
    ) -> IncomingMessage | None:
        """Fetch one message (see :meth:`Queue.get`); waits for a restore first."""
        timeout = await self.channel._wait_ready(timeout)
        if fail:
            return await super().get(no_ack=no_ack, fail=True, timeout=timeout)
        return await super().get(no_ack=no_ack, fail=False, timeout=timeout)

    async def purge(
        self, no_wait: bool = False, timeout: TimeoutType = None
    ) -> spec.Queue.PurgeOk | None:
        """Drop every ready message; waits for a restore first."""
        timeout = await self.channel._wait_ready(timeout)
        return await super().purge(no_wait=no_wait, timeout=timeout)

    async def delete(
        self, *, if_unused: bool = True, if_empty: bool = True, timeout: TimeoutType = None
    ) -> spec.Queue.DeleteOk:
        """Delete the queue; it is not declared again after a reconnect."""
        timeout = await self.channel._wait_ready(timeout)
        result = await super().delete(if_unused=if_unused, if_empty=if_empty, timeout=timeout)
        self._consumers.clear()
        self.channel._forget_queue(self)
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

    @property
    def _passive_restore(self) -> bool:
        # someone else's queue: checked, never declared by a restore
        return self.passive or not self._declared

    async def _probe(self, channel: LowLevelChannel) -> None:
        """Declare the queue and bind it again on ``channel``, a channel of its own.

        Run before the consumers the broker cancelled are started again: a
        queue declared with ``passive=True``, or never declared here (someone
        else's), raises ChannelNotFoundEntity until it exists again; any other
        is declared (again) with its parameters and bindings. A failure closes
        ``channel`` only.
        """
        await channel.queue_declare(
            self.name,
            durable=self.durable,
            exclusive=self.exclusive,
            auto_delete=self.auto_delete,
            arguments=self.arguments,
            passive=self._passive_restore,
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
        """Declare again, under the same name (passively: one never declared here)."""
        # the base class's calls: the restore is what the robust ones wait for
        if not self._passive_restore:
            await Queue.declare(self)
            return
        channel = self.channel.channel_or_raise()
        self.declaration_result = await channel.queue_declare(self.name, passive=True)

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

    It ends when it is closed, its channel or connection is closed for good,
    or its channel is lost and its consumer does not come back (started with
    ``robust=False``, or on a queue declared with ``robust=False``).
    """

    _amqp_queue: RobustQueue
    # seconds before starting the consumer again when the channel was lost
    # between the wait for its restore and the Basic.Consume
    RETRY_DELAY: float = 0.5

    def __init__(self, queue: RobustQueue, **kwargs: Any) -> None:
        super().__init__(queue, **kwargs)
        connection = getattr(queue.channel, "_connection", None)
        if connection is not None:
            self._wake_up_on(connection.closed(), self._on_connection_closed)
        # the queue's close callbacks hear of every loss of the channel; the
        # function holds the iterator weakly and goes when the iterator closes
        self._on_lost = weak_method_callback(self._on_channel_lost)
        queue.close_callbacks.add(self._on_lost)

    def _on_connection_closed(self, _future: Any) -> None:
        self._set_closed()

    def _on_channel_lost(self, _queue: Any, _error: BaseException | None) -> None:
        tag = self._consumer_tag
        if tag is None or self._closed.done():
            return  # not started: consume() waits for the restore
        if not self._amqp_queue._restores(tag):
            self._set_closed()  # nothing will come: end the iteration

    def _on_iterator_closed(self, future: Any) -> None:
        super()._on_iterator_closed(future)
        self._amqp_queue.close_callbacks.discard(self._on_lost)

    def _drop_buffered(self) -> None:
        # Fetched on the old connection: they cannot be acked any more and
        # the broker delivers them again.
        self._queue.clear()

    async def consume(self) -> None:
        """Start the consumer, after the channel's restore when it is being restored."""
        while True:
            try:
                await super().consume()
                return
            except ChannelInvalidStateError:
                if self._exhausted():
                    return  # closed meanwhile: the iteration ends
                if self._amqp_queue.channel._never_back():
                    raise
                log.debug("%r: channel lost while consuming; trying again", self)
                await asyncio.sleep(self.RETRY_DELAY)

    async def _cancel_consumer(self) -> None:
        tag = self._consumer_tag
        if tag is not None:
            # not started again after a reconnect, even when the channel is
            # down now and the cancel cannot reach the broker
            self._amqp_queue._consumers.pop(tag, None)
        await super()._cancel_consumer()
