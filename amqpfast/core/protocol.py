"""The transport: bytes from the socket into the codec, frames out, flow control."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ..codec import FrameReader
from ..exceptions import ProtocolError

if TYPE_CHECKING:
    from .connection import Connection


class AMQPProtocol(asyncio.Protocol):
    """Feeds each received chunk to the codec once and hands the events on.

    Writes are the connection's (it owns the FrameWriter); this class tells it
    when the transport wants writing paused and resumed.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # Frames on a channel that is not in the connection's dict (its open
        # channels, and those whose Close awaits its CloseOk) end the
        # connection: a peer cannot make us hold content nobody will take.
        self.reader = FrameReader(
            max_message_size=connection.max_message_size, channels=connection._channels
        )
        self.transport: asyncio.Transport | None = None
        self.received = True  # something came since the last heartbeat tick
        self.paused = False
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            events = self.reader.feed(data)
        except ProtocolError as error:
            self.connection._on_protocol_error(error)
            return
        self.connection._on_events(events)

    def eof_received(self) -> bool:
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._wake_writers()
        self.connection._on_connection_lost(exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    async def drained(self) -> None:
        """Wait until the transport takes writes again (or is lost)."""
        if not self.paused:
            return
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drained)
