"""Transactions: ``async with channel.transaction():`` commits, or rolls back on error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pamqp import commands as spec

from .abc import AbstractTransaction, TimeoutType, TransactionState

if TYPE_CHECKING:
    from .channel import Channel

__all__ = ["Transaction"]


class Transaction(AbstractTransaction):
    """A transaction on a channel (made by :meth:`Channel.transaction`).

    Publishes and acks between :meth:`select` and :meth:`commit` take effect
    together; :meth:`rollback` drops them. The channel must be opened with
    ``publisher_confirms=False``: RabbitMQ refuses both modes on one channel.
    """

    def __init__(self, channel: Channel) -> None:
        self.state = TransactionState.CREATED
        self._channel = channel

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.value}>"

    @property
    def channel(self) -> Channel:
        """The channel it runs on."""
        return self._channel

    async def select(self, timeout: TimeoutType = None) -> spec.Tx.SelectOk:
        """Put the channel in transaction mode."""
        channel = await self._channel.get_underlay_channel()
        result = await channel.tx_select(timeout=timeout)
        self.state = TransactionState.STARTED
        return result

    async def rollback(self, timeout: TimeoutType = None) -> spec.Tx.RollbackOk:
        """Drop what was published and acked since select or the last commit."""
        channel = await self._channel.get_underlay_channel()
        result = await channel.tx_rollback(timeout=timeout)
        self.state = TransactionState.ROLLED_BACK
        return result

    async def commit(self, timeout: TimeoutType = None) -> spec.Tx.CommitOk:
        """Make what was published and acked take effect."""
        channel = await self._channel.get_underlay_channel()
        result = await channel.tx_commit(timeout=timeout)
        self.state = TransactionState.COMMITED
        return result

    async def __aenter__(self) -> Transaction:
        await self.select()
        return self

    async def __aexit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is None:
            await self.commit()
        else:
            await self.rollback()
