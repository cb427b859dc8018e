"""amqpfast's frame codec talking to a real RabbitMQ over a plain blocking socket.

The codec is sans-IO: ``FrameWriter`` turns methods and messages into bytes and
``FrameReader`` turns the bytes the broker sends into events. :class:`SocketClient`
below is the smallest client that puts a socket between the two: enough AMQP to
log in, open channels, declare queues, publish, confirm, get and consume. The
rare methods are pamqp's command classes; the hot path (publish, ack, deliveries,
confirms) goes through the codec's own classes.

Run it (the broker must be up; ``bash scripts/demo.sh`` sees to that)::

    .venv/bin/python examples/codec_demo.py [amqp://guest:guest@127.0.0.1:5672/%2F]

``AMQPFAST_NO_EXTENSIONS=1`` runs it on the pure-Python codec.
"""

from __future__ import annotations

import collections
import datetime
import socket
import sys
import time
import uuid
from collections.abc import Callable
from types import ModuleType, TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import commands

import amqpfast
from amqpfast import codec

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
FRAME_MAX = 131072


class BrokerClosedError(Exception):
    """The broker closed a channel (or, on channel 0, the connection).

    :param channel: the channel that was closed.
    :param method: the broker's ``Channel.Close`` or ``Connection.Close``.
    """

    def __init__(self, channel: int, method: Any) -> None:
        what = "connection" if channel == 0 else f"channel {channel}"
        super().__init__(f"{what} closed by the broker: {method.reply_code} {method.reply_text}")
        self.channel = channel
        self.method = method


class SocketClient:
    """A blocking AMQP 0-9-1 client: one socket, every wait bounded by ``timeout``.

    Events the caller is not waiting for yet (a delivery while a reply is due,
    say) are kept in arrival order until asked for.

    :param url: ``amqp://user:password@host:port/vhost``.
    :param timeout: seconds any single wait (connect, reply, message) may take.
    :param frame_max: the largest frame to agree to; the broker's may be lower.
    :param codec_module: the codec to use: ``amqpfast.codec`` (the default picks
        the compiled one if built), or ``amqpfast._codec`` / ``amqpfast._codec_py``.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        timeout: float = 10.0,
        frame_max: int = FRAME_MAX,
        codec_module: ModuleType | None = None,
    ) -> None:
        # Any: the two codec modules have the same names but are distinct classes.
        self.codec: Any = codec if codec_module is None else codec_module
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5672
        self.username = unquote(parts.username or "guest")
        self.password = unquote(parts.password or "guest")
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.timeout = timeout
        self.wanted_frame_max = frame_max
        self.reader = self.codec.FrameReader()
        self.writer = self.codec.FrameWriter()
        self.server_properties: dict[str, Any] = {}
        self.frame_max = 0
        self.channel_max = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._sock: socket.socket | None = None
        self._pending: collections.deque[Any] = collections.deque()
        self._closed: dict[int, Any] = {}  # channel -> the broker's Close method
        self._next_channel = 1

    # ------------------------------------------------------------ plumbing

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionError("not connected")
        return self._sock

    def flush(self) -> None:
        """Send everything the writer holds."""
        sock = self._socket()
        for piece in self.writer.take():
            sock.sendall(piece)
            self.bytes_sent += len(piece)

    def _receive(self, deadline: float) -> None:
        sock = self._socket()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from the broker in time")
        sock.settimeout(remaining)
        data = sock.recv(262144)
        if not data:
            raise ConnectionError("the broker closed the connection")
        self.bytes_received += len(data)
        for event in self.reader.feed(data):
            if isinstance(event, self.codec.Heartbeat):
                continue
            if isinstance(event, self.codec.ProtocolHeader):
                raise ConnectionError(f"the broker refused AMQP 0-9-1: it speaks {event!r}")
            method = getattr(event, "method", None)
            if isinstance(method, commands.Channel.Close):
                # Answer at once, as the protocol asks; the waiter on that channel raises.
                self.writer.method(event.channel, commands.Channel.CloseOk())
                self.flush()
                self._closed[event.channel] = method
                continue
            if isinstance(method, commands.Connection.Close):
                self.writer.method(0, commands.Connection.CloseOk())
                self.flush()
                self._disconnect()
                raise BrokerClosedError(0, method)
            self._pending.append(event)

    def wait(self, channel: int, match: Callable[[Any], bool]) -> Any:
        """Return the first event on ``channel`` that ``match`` accepts.

        :raises BrokerClosedError: the broker closed the channel meanwhile.
        :raises TimeoutError: nothing matched within ``timeout`` seconds.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            for index, event in enumerate(self._pending):
                if event.channel == channel and match(event):
                    del self._pending[index]
                    return event
            if channel in self._closed:  # kept until channel_close() forgets it
                raise BrokerClosedError(channel, self._closed[channel])
            self._receive(deadline)

    def expect(self, channel: int, *types: type) -> Any:
        """Wait for a method of one of ``types`` on ``channel``; return the method."""
        frame = self.wait(
            channel, lambda e: isinstance(e, self.codec.MethodFrame) and isinstance(e.method, types)
        )
        return frame.method

    def rpc(self, channel: int, method: Any, *reply_types: type) -> Any:
        """Send a synchronous method and return the broker's reply."""
        self.writer.method(channel, method)
        self.flush()
        return self.expect(channel, *reply_types)

    # ---------------------------------------------------------- connection

    def connect(self) -> SocketClient:
        """Open the socket and do the handshake: Start, Tune, Open."""
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        try:
            self._handshake()
        except BaseException:
            self._disconnect()
            raise
        return self

    def _handshake(self) -> None:
        assert self._sock is not None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.writer.protocol_header()
        self.flush()
        start = self.expect(0, commands.Connection.Start)
        if "PLAIN" not in str(start.mechanisms).split():
            raise ConnectionError(f"the broker does not offer PLAIN: {start.mechanisms}")
        self.server_properties = start.server_properties
        client_properties: dict[str, Any] = {
            "product": "amqpfast codec demo",
            "version": amqpfast.__version__,
            "platform": f"Python {sys.version.split()[0]}",
            "capabilities": {"publisher_confirms": True, "authentication_failure_close": True},
        }
        self.writer.method(
            0,
            commands.Connection.StartOk(
                client_properties=client_properties,
                mechanism="PLAIN",
                response=f"\0{self.username}\0{self.password}",
                locale="en_US",
            ),
        )
        self.flush()
        tune = self.expect(0, commands.Connection.Tune)
        # 0 means "no limit" on either side: take the smaller real limit.
        limits = [n for n in (tune.frame_max, self.wanted_frame_max) if n]
        self.frame_max = min(limits) if limits else 0
        self.channel_max = tune.channel_max or 65535
        # Heartbeats off: this client only reads while it waits for something.
        self.writer.method(0, commands.Connection.TuneOk(self.channel_max, self.frame_max, 0))
        self.writer.frame_max = self.reader.frame_max = self.frame_max
        self.rpc(0, commands.Connection.Open(virtual_host=self.vhost), commands.Connection.OpenOk)

    def close(self) -> None:
        """Close the connection politely (Connection.Close, CloseOk), then the socket."""
        if self._sock is None:
            return
        try:
            self.rpc(
                0,
                commands.Connection.Close(200, "Normal shutdown", 0, 0),
                commands.Connection.CloseOk,
            )
        finally:
            self._disconnect()

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SocketClient:
        return self if self._sock is not None else self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # the connection may be in any state: just drop it
            self._disconnect()

    # ------------------------------------------------------------ channels

    def channel_open(self) -> int:
        """Open the next channel and return its number."""
        channel = self._next_channel
        self._next_channel += 1
        self.rpc(channel, commands.Channel.Open(), commands.Channel.OpenOk)
        return channel

    def channel_close(self, channel: int) -> None:
        """Close a channel (a no-op if the broker closed it already)."""
        if self._closed.pop(channel, None) is None:
            self.rpc(
                channel,
                commands.Channel.Close(200, "Normal shutdown", 0, 0),
                commands.Channel.CloseOk,
            )
        self._pending = collections.deque(e for e in self._pending if e.channel != channel)

    def confirm_select(self, channel: int) -> None:
        """Put the channel in publisher-confirm mode."""
        self.rpc(channel, commands.Confirm.Select(), commands.Confirm.SelectOk)

    def queue_declare(self, channel: int, queue: str = "", **options: Any) -> Any:
        """Declare a queue; ``options`` are Queue.Declare's (passive, exclusive ...)."""
        return self.rpc(
            channel, commands.Queue.Declare(queue=queue, **options), commands.Queue.DeclareOk
        )

    def queue_delete(self, channel: int, queue: str) -> int:
        """Delete a queue; return how many messages it held."""
        ok = self.rpc(channel, commands.Queue.Delete(queue=queue), commands.Queue.DeleteOk)
        return int(ok.message_count)

    # ------------------------------------------------------------ messages

    def publish(
        self,
        channel: int,
        body: bytes,
        exchange: str = "",
        routing_key: str = "",
        properties: Any = None,
        mandatory: bool = False,
        flush: bool = True,
    ) -> None:
        """Publish a message; with ``flush=False`` it waits for the next flush."""
        self.writer.publish(
            channel, body, exchange, routing_key, properties=properties, mandatory=mandatory
        )
        if flush:
            self.flush()

    def wait_confirm(self, channel: int) -> Any:
        """The next publisher confirm on the channel: a BasicAck or BasicNack."""
        frame = self.wait(
            channel,
            lambda e: (
                isinstance(e, self.codec.MethodFrame)
                and isinstance(e.method, (self.codec.BasicAck, self.codec.BasicNack))
            ),
        )
        return frame.method

    def wait_confirms(self, channel: int, last_tag: int) -> list[Any]:
        """Collect confirms until the one that covers delivery tag ``last_tag``."""
        confirms = []
        seen = 0
        while seen < last_tag:
            confirm = self.wait_confirm(channel)
            confirms.append(confirm)
            seen = max(seen, confirm.delivery_tag)
        return confirms

    def basic_get(self, channel: int, queue: str, no_ack: bool = False) -> Any:
        """Basic.Get: the message as a ContentMessage, or None if the queue is empty."""
        self.writer.method(channel, commands.Basic.Get(queue=queue, no_ack=no_ack))
        self.flush()
        event = self.wait(
            channel,
            lambda e: (
                (
                    isinstance(e, self.codec.ContentMessage)
                    and isinstance(e.method, self.codec.BasicGetOk)
                )
                or (
                    isinstance(e, self.codec.MethodFrame)
                    and isinstance(e.method, commands.Basic.GetEmpty)
                )
            ),
        )
        return event if isinstance(event, self.codec.ContentMessage) else None

    def basic_qos(self, channel: int, prefetch_count: int) -> None:
        """Limit the unacknowledged deliveries on the channel."""
        self.rpc(channel, commands.Basic.Qos(prefetch_count=prefetch_count), commands.Basic.QosOk)

    def basic_consume(self, channel: int, queue: str, no_ack: bool = False) -> str:
        """Start a consumer; return its tag (chosen by the broker)."""
        ok = self.rpc(
            channel, commands.Basic.Consume(queue=queue, no_ack=no_ack), commands.Basic.ConsumeOk
        )
        return str(ok.consumer_tag)

    def next_delivery(self, channel: int) -> Any:
        """The next Basic.Deliver message on the channel (a ContentMessage)."""
        return self.wait(
            channel,
            lambda e: (
                isinstance(e, self.codec.ContentMessage)
                and isinstance(e.method, self.codec.BasicDeliver)
            ),
        )

    def next_return(self, channel: int) -> Any:
        """The next message the broker returned as unroutable (a ContentMessage)."""
        return self.wait(
            channel,
            lambda e: (
                isinstance(e, self.codec.ContentMessage)
                and isinstance(e.method, self.codec.BasicReturn)
            ),
        )

    def ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (or all up to it, with ``multiple``)."""
        self.writer.ack(channel, delivery_tag, multiple)
        self.flush()

    def basic_cancel(self, channel: int, consumer_tag: str) -> None:
        """Stop a consumer."""
        self.rpc(channel, commands.Basic.Cancel(consumer_tag=consumer_tag), commands.Basic.CancelOk)


# ------------------------------------------------------------------ the demo


def _describe(message: Any) -> str:
    method = message.method
    props = message.properties
    body = message.body
    shown = body[:24] + (b"..." if len(body) > 24 else b"")
    return (
        f"{method.name:<13} tag={method.delivery_tag:<2} key={method.routing_key!r} "
        f"id={props.message_id!r} {len(body):>6} B {shown!r} headers={props.headers}"
    )


def _masked(url: str) -> str:
    """The URL with its password hidden, fit to be printed."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":******@", 1)
    return parts._replace(netloc=netloc).geturl()


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else DEFAULT_URL
    queue = f"amqpfast-demo-{uuid.uuid4().hex[:12]}"
    sent_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    bodies = [b"hello", b"", "grüße, amqp".encode(), bytes(range(256)) * 1200, b"last one"]
    started = time.perf_counter()

    print(f"amqpfast {amqpfast.__version__}, codec implementation: {codec.IMPLEMENTATION}")
    try:
        client = SocketClient(url).connect()
    except (OSError, BrokerClosedError) as error:
        print(f"cannot connect to the broker at {_masked(url)}: {error}", file=sys.stderr)
        return 1
    with client:
        server = client.server_properties
        print(
            f"connected to {server.get('product')} {server.get('version')} "
            f"at {client.host}:{client.port}, frame_max={client.frame_max}"
        )
        channel = client.channel_open()
        client.confirm_select(channel)
        ok = client.queue_declare(channel, queue, exclusive=True, auto_delete=True)
        print(f"declared queue {ok.queue!r} (exclusive, auto-delete)")

        # One pipelined batch: all publishes go out in one flush.
        for number, body in enumerate(bodies, 1):
            properties = codec.BasicProperties(
                content_type="application/octet-stream",
                delivery_mode=1,
                message_id=f"msg-{number}",
                timestamp=sent_at,
                headers={"number": number, "size": len(body), "demo": True},
            )
            client.publish(channel, body, routing_key=queue, properties=properties, flush=False)
        client.flush()
        confirms = client.wait_confirms(channel, len(bodies))
        print(f"published {len(bodies)} messages, broker confirms: {confirms}")

        received = []
        # The first two with Basic.Get ...
        for _ in range(2):
            message = client.basic_get(channel, queue)
            if message is None:
                print("queue unexpectedly empty", file=sys.stderr)
                return 1
            print(" got     ", _describe(message))
            client.ack(channel, message.method.delivery_tag)
            received.append(message)
        # ... the rest pushed to a consumer, acknowledged in one go at the end.
        client.basic_qos(channel, prefetch_count=10)
        tag = client.basic_consume(channel, queue)
        for _ in range(len(bodies) - 2):
            message = client.next_delivery(channel)
            print(" consumed", _describe(message))
            received.append(message)
        client.ack(channel, received[-1].method.delivery_tag, multiple=True)
        client.basic_cancel(channel, tag)
        client.channel_close(channel)

    elapsed = time.perf_counter() - started
    same = [m.body for m in received] == bodies and all(
        m.properties.message_id == f"msg-{n}" and m.properties.timestamp == sent_at
        for n, m in enumerate(received, 1)
    )
    print(
        f"closed cleanly; {client.bytes_sent} bytes sent, {client.bytes_received} received "
        f"in {elapsed * 1000:.1f} ms"
    )
    if not same:
        print("MISMATCH: what came back differs from what was sent", file=sys.stderr)
        return 1
    print(f"all {len(bodies)} messages came back intact")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
