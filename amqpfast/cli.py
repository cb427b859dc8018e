"""The ``amqpfast`` command: publish, consume and bench against a broker.

amqpfast publish --routing-key jobs 'hello'
echo 'hello' | amqpfast publish --routing-key jobs --header retry=1
amqpfast consume jobs --count 10 --json
amqpfast bench --count 100000 --size 64
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ._version import __version__
from .codec import IMPLEMENTATION, BasicProperties
from .core import Channel, DeliveredMessage, connect
from .exceptions import AMQPError

DEFAULT_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
_PROPERTY_NAMES = {
    "content_type",
    "content_encoding",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "message_type",
    "user_id",
    "app_id",
}
_INTEGER_PROPERTIES = {"delivery_mode", "priority"}


def _pair(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _header_value(text: str) -> Any:
    # JSON when it parses (numbers, booleans, lists ...), else the text itself
    try:
        return json.loads(text)
    except ValueError:
        return text


def _properties(options: argparse.Namespace) -> BasicProperties:
    properties = BasicProperties()
    for key, value in options.property:
        name = key.replace("-", "_")
        if name == "type":
            name = "message_type"
        if name not in _PROPERTY_NAMES:
            raise SystemExit(f"unknown property {key!r}")
        setattr(properties, name, int(value) if name in _INTEGER_PROPERTIES else value)
    if options.header:
        properties.headers = {key: _header_value(value) for key, value in options.header}
    if options.persistent:
        properties.delivery_mode = 2
    return properties


async def _publish(options: argparse.Namespace) -> int:
    body = options.body.encode() if options.body is not None else sys.stdin.buffer.read()
    async with await connect(options.url) as connection:
        channel = await connection.channel(
            publisher_confirms=options.confirm, on_return_raises=False
        )
        confirmation = await channel.basic_publish(
            body,
            exchange=options.exchange,
            routing_key=options.routing_key,
            properties=_properties(options),
            mandatory=options.mandatory,
        )
        if options.confirm:
            # a returned mandatory message comes back as the result
            if isinstance(confirmation, DeliveredMessage):
                outcome = f"returned, {confirmation.delivery.reply_text}"
            else:
                outcome = confirmation.name
            print(f"published {len(body)} bytes: {outcome}", file=sys.stderr)
    return 0


def _json_line(message: DeliveredMessage) -> str:
    properties = {
        key: value.isoformat() if hasattr(value, "isoformat") else value
        for key, value in message.properties
        if value is not None
    }
    try:
        body: Any = message.body.decode()
        encoding = "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(message.body).decode(), "base64"
    record = {
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "delivery_tag": message.delivery_tag,
        "redelivered": message.redelivered,
        "properties": properties,
        "body": body,
        "body_encoding": encoding,
    }
    return json.dumps(record, default=repr)


async def _consume(options: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    done = asyncio.Event()
    received = 0

    def on_message(message: DeliveredMessage) -> None:
        nonlocal received
        if options.count and received >= options.count:
            return  # past the limit: left unacked, the broker requeues it on close
        received += 1
        if options.json:
            print(_json_line(message), file=out, flush=True)
        else:
            print(message.body.decode(errors="replace"), file=out, flush=True)
        if not options.no_ack:
            message.channel.basic_ack(message.delivery_tag)  # type: ignore[arg-type]
        if options.count and received >= options.count:
            done.set()

    async with await connect(options.url) as connection:
        channel = await connection.channel(publisher_confirms=False)
        if options.declare:
            await channel.queue_declare(options.queue, durable=True)
        if options.count:
            await channel.basic_qos(prefetch_count=min(options.count, 1000))
        await channel.basic_consume(options.queue, on_message, no_ack=options.no_ack)
        # until the count is reached, the timeout passes or the connection fails
        waiter: asyncio.Future[Any] = asyncio.ensure_future(done.wait())
        closing: asyncio.Future[Any] = asyncio.shield(connection.closing)
        finished, _ = await asyncio.wait(
            {closing, waiter}, timeout=options.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        if closing in finished:
            closing.result()
    return 0


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = total
        self.stream = stream
        self.shown = -1
        self.enabled = stream.isatty()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        percent = done * 100 // self.total if self.total else 100
        if percent != self.shown:
            self.shown = percent
            filled = percent * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            print(f"\r{self.label:<8} [{bar}] {percent:3d}%", end="", file=self.stream)
            if done >= self.total:
                print(file=self.stream)
            self.stream.flush()


async def _bench_publish(
    channel: Channel, queue: str, count: int, body: bytes, progress: _Progress
) -> None:
    if not channel.confirm_mode:
        for number in range(count):
            await channel.basic_publish(body, routing_key=queue)
            if number % 1000 == 0:
                progress.update(number)
        # The broker handles a channel's methods in order: once this answers,
        # every message above is in the queue, not just in a socket buffer.
        await channel.queue_declare(queue, passive=True)
        progress.update(count)
        return
    window = 1000  # confirms awaited in batches: the publisher stays ahead of the broker
    for start in range(0, count, window):
        batch = [
            channel.basic_publish(body, routing_key=queue)
            for _ in range(min(window, count - start))
        ]
        await asyncio.gather(*batch)
        progress.update(start + len(batch))


async def _bench_consume(
    channel: Channel, queue: str, count: int, no_ack: bool, progress: _Progress
) -> None:
    done = asyncio.get_running_loop().create_future()
    received = 0

    def on_message(message: DeliveredMessage) -> None:
        nonlocal received
        received += 1
        if not no_ack and (received % 100 == 0 or received == count):
            channel.basic_ack(message.delivery_tag, multiple=True)  # type: ignore[arg-type]
        if received % 1000 == 0 or received == count:
            progress.update(received)
        if received == count:
            done.set_result(None)

    await channel.basic_qos(prefetch_count=1000)
    ok = await channel.basic_consume(queue, on_message, no_ack=no_ack)
    await done
    await channel.basic_cancel(ok.consumer_tag or "")


def _report(label: str, count: int, wall: float, cpu: float, out: TextIO) -> None:
    print(
        f"{label:<8} {count} messages in {wall:.2f} s: {count / wall:,.0f} msg/s, "
        f"client CPU {cpu / count * 1e6:.2f} µs/msg",
        file=out,
    )


async def _bench(options: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    body = os.urandom(options.size)
    count = options.count
    async with await connect(options.url) as connection:
        channel = await connection.channel(publisher_confirms=options.confirm)
        declared = await channel.queue_declare("", exclusive=True)
        queue = declared.queue if declared is not None and declared.queue else ""
        consumer_channel = await connection.channel(publisher_confirms=False)

        wall, cpu = time.perf_counter(), time.process_time()
        await _bench_publish(channel, queue, count, body, _Progress("publish", count))
        published = time.perf_counter() - wall, time.process_time() - cpu

        wall, cpu = time.perf_counter(), time.process_time()
        progress = _Progress("consume", count)
        await _bench_consume(consumer_channel, queue, count, options.no_ack, progress)
        consumed = time.perf_counter() - wall, time.process_time() - cpu

    mode = "with confirms" if options.confirm else "no confirms"
    ack = "no ack" if options.no_ack else "acked"
    print(f"amqpfast bench: {count} x {options.size} B ({mode}; consume {ack})", file=out)
    _report("publish", count, *published, out)
    _report("consume", count, *consumed, out)
    return 0


def version_text() -> str:
    """amqpfast's version, the codec that runs ("c" or "python") and the interpreter."""
    return (
        f"amqpfast {__version__} (codec {IMPLEMENTATION}; "
        f"{platform.python_implementation()} {platform.python_version()}, {sys.executable})"
    )


class _PrintVersion(argparse.Action):
    # argparse's own "version" action wraps the line at the terminal's width
    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_text())
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amqpfast", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--version",
        action=_PrintVersion,
        help="print the version, the codec implementation and the interpreter, and exit",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="broker URL (default: $AMQP_URL)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    commands = parser.add_subparsers(dest="command", required=True)

    publish = commands.add_parser("publish", help="publish one message")
    publish.add_argument("body", nargs="?", help="message body (default: read stdin)")
    publish.add_argument("--exchange", "-e", default="")
    publish.add_argument("--routing-key", "-r", default="")
    publish.add_argument(
        "--property",
        "-p",
        type=_pair,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a message property, e.g. content_type=text/plain",
    )
    publish.add_argument(
        "--header",
        "-H",
        type=_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a header (JSON values are typed)",
    )
    publish.add_argument("--persistent", action="store_true", help="delivery_mode=2")
    publish.add_argument("--mandatory", action="store_true")
    publish.add_argument(
        "--no-confirm",
        dest="confirm",
        action="store_false",
        help="do not wait for the broker's confirm",
    )

    consume = commands.add_parser("consume", help="print messages from a queue")
    consume.add_argument("queue")
    consume.add_argument("--count", "-n", type=int, default=0, help="stop after N messages")
    consume.add_argument("--json", action="store_true", help="one JSON object per message")
    consume.add_argument("--no-ack", action="store_true", help="consume without acks")
    consume.add_argument("--declare", action="store_true", help="declare the queue (durable)")
    consume.add_argument("--timeout", type=float, default=None, help="give up after N seconds")

    bench = commands.add_parser("bench", help="publish then consume N messages")
    bench.add_argument("--count", "-n", type=int, default=100_000)
    bench.add_argument("--size", "-s", type=int, default=64, help="body size in bytes")
    bench.add_argument("--confirm", action="store_true", help="publish with confirms")
    bench.add_argument("--no-ack", action="store_true", help="consume without acks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    options = _parser().parse_args(argv)
    runners = {"publish": _publish, "consume": _consume, "bench": _bench}
    if options.uvloop:
        import uvloop

        uvloop.install()
    try:
        return asyncio.run(runners[options.command](options))
    except AMQPError as error:
        print(f"amqpfast: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


__all__ = ["main"]
