"""aio-pika programs on amqpfast: the compat alias, and one program run on both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PROGRAM = Path(__file__).resolve().parent / "programs" / "aio_pika_program.py"


def run(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def test_install_makes_aio_pika_amqpfast():
    done = run(
        "-c",
        "import amqpfast, amqpfast.compat; amqpfast.compat.install();"
        "import aio_pika, aio_pika.abc, aio_pika.exceptions, aio_pika.message;"
        "from aio_pika.patterns.rpc import RPC; from aio_pika.pool import Pool;"
        "assert RPC is amqpfast.patterns.RPC and Pool is amqpfast.pool.Pool;"
        "from aio_pika import Message, connect, ExchangeType, DeliveryMode;"
        "assert aio_pika.connect is amqpfast.connect and aio_pika.abc is amqpfast.abc;"
        "assert aio_pika.exceptions.QueueEmpty is amqpfast.exceptions.QueueEmpty;"
        "assert Message is amqpfast.Message; print('ok')",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_install_refuses_after_the_real_aio_pika_was_imported():
    done = run("-c", "import aio_pika, amqpfast.compat; amqpfast.compat.install()")
    assert done.returncode != 0
    assert "imported already" in done.stderr


def test_nothing_is_claimed_by_default():
    done = run("-c", "import amqpfast, sys; print('aio_pika' in sys.modules)")
    assert done.stdout.strip() == "False"


@pytest.mark.broker
def test_an_aio_pika_program_gives_the_same_output_on_amqpfast(amqp_url, unique):
    on_aio_pika = run(str(PROGRAM), amqp_url, f"{unique}-a")
    on_amqpfast = run(str(PROGRAM), amqp_url, f"{unique}-b", "amqpfast")

    assert on_aio_pika.returncode == 0, on_aio_pika.stderr
    assert on_amqpfast.returncode == 0, on_amqpfast.stderr
    # the queue names differ by prefix; everything else must be the same
    assert on_amqpfast.stdout.replace(f"{unique}-b", "Q") == on_aio_pika.stdout.replace(
        f"{unique}-a", "Q"
    )
    assert on_amqpfast.stdout.splitlines()[0] == (
        "iterated [('order 0', 0), ('order 1', 1), ('order 2', 2)]"
    )


async def test_instrumentation_can_wrap_publish_and_consume(monkeypatch, amqp_url):
    # Instrumentation libraries (OpenTelemetry's) replace these on the classes.
    import asyncio

    import amqpfast

    calls: list[str] = []
    original_publish = amqpfast.Exchange.publish
    original_consume = amqpfast.Queue.consume

    async def publish(self, message, routing_key, **kwargs):
        calls.append(f"publish {message.body.decode()}")
        return await original_publish(self, message, routing_key, **kwargs)

    async def consume(self, callback, *args, **kwargs):
        async def traced(message):
            calls.append(f"deliver {message.body.decode()}")
            return await callback(message)

        calls.append("consume")
        return await original_consume(self, traced, *args, **kwargs)

    monkeypatch.setattr(amqpfast.Exchange, "publish", publish)
    monkeypatch.setattr(amqpfast.Queue, "consume", consume)
    async with await amqpfast.connect(amqp_url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        got = asyncio.Event()

        async def on_message(message):
            await message.ack()
            got.set()

        await queue.consume(on_message)
        await channel.default_exchange.publish(amqpfast.Message(b"hi"), routing_key=queue.name)
        await asyncio.wait_for(got.wait(), 10)

    assert calls == ["consume", "publish hi", "deliver hi"]


@pytest.mark.broker
def test_libraries_catching_aiormq_exceptions_catch_amqpfast_errors(amqp_url, unique):
    # A library on aio-pika that catches aiormq's class by name (as taskiq-aio-pika
    # does for a missing exchange) must see the broker's 404 raised by amqpfast.
    done = run(
        "-c",
        "import asyncio, sys, amqpfast.compat; amqpfast.compat.install(aiormq=False);"
        "import aio_pika, aiormq, aiormq.exceptions\n"
        "async def main():\n"
        "    async with await aio_pika.connect(sys.argv[1]) as connection:\n"
        "        channel = await connection.channel()\n"
        "        try:\n"
        "            await channel.get_exchange(sys.argv[2], ensure=True)\n"
        "        except aiormq.exceptions.ChannelNotFoundEntity as error:\n"
        "            assert isinstance(error, aiormq.ChannelClosed), type(error).__mro__\n"
        "            print('caught', error.reply_code)\n"
        "asyncio.run(main())\n"
        "amqpfast.compat.uninstall()\n"
        "assert aiormq.exceptions.ChannelNotFoundEntity.__module__ == 'aiormq.exceptions'\n"
        "assert aiormq.ChannelNotFoundEntity is aiormq.exceptions.ChannelNotFoundEntity\n"
        "print('restored')",
        amqp_url,
        f"{unique}-missing",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["caught", "404", "restored"]


def test_aio_pika_reports_the_version_amqpfast_follows():
    done = run(
        "-c",
        "import amqpfast, amqpfast.compat; amqpfast.compat.install(); import aio_pika\n"
        "assert aio_pika.__version__ == amqpfast.compat.AIO_PIKA_VERSION == '10.2.1'\n"
        "assert amqpfast.__version__ != aio_pika.__version__\n"
        "assert aio_pika.__name__ == 'aio_pika' and 'Queue' in dir(aio_pika)\n"
        "from aio_pika import *\n"
        "assert Message is amqpfast.Message and RobustConnection is amqpfast.RobustConnection\n"
        "marker = object()\n"
        "aio_pika.connect = marker  # monkeypatching the alias patches amqpfast\n"
        "assert amqpfast.connect is marker\n"
        "print(amqpfast.__version__)",
    )
    assert done.returncode == 0, done.stderr
    import amqpfast

    assert done.stdout.strip() == amqpfast.__version__


def test_install_takes_over_an_aiormq_imported_before():
    done = run(
        "-c",
        "import sys, aiormq, aiormq.exceptions, amqpfast, amqpfast.compat\n"
        "real, real_exceptions = aiormq, aiormq.exceptions\n"
        "amqpfast.compat.install()\n"
        "import aiormq as face\n"
        "assert face is amqpfast.aiormq and face.__version__ == '7.2.4'\n"
        "assert sys.modules['aiormq.exceptions'] is amqpfast.aiormq.exceptions\n"
        "# code that holds the real module catches amqpfast's errors\n"
        "E = amqpfast.exceptions\n"
        "assert real_exceptions.ChannelNotFoundEntity is E.ChannelNotFoundEntity\n"
        "assert real.AMQPConnectionError is E.AMQPConnectionError\n"
        "amqpfast.compat.uninstall()\n"
        "assert sys.modules['aiormq'] is real and 'aio_pika' not in sys.modules\n"
        "assert real_exceptions.ChannelNotFoundEntity.__module__ == 'aiormq.exceptions'\n"
        "print('ok')",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_install_without_aiormq_keeps_the_real_one():
    done = run(
        "-c",
        "import amqpfast, amqpfast.compat; amqpfast.compat.install(aiormq=False)\n"
        "import aiormq, aiormq.exceptions\n"
        "assert aiormq.__file__.endswith('aiormq/__init__.py') \n"
        "E = amqpfast.exceptions\n"
        "assert aiormq.exceptions.ChannelClosed is E.ChannelClosed\n"
        "print('ok')",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_install_twice_is_harmless():
    done = run(
        "-c",
        "import sys, amqpfast.compat; amqpfast.compat.install()\n"
        "first = sys.modules['aio_pika'], sys.modules['aiormq']\n"
        "amqpfast.compat.install()\n"
        "assert (sys.modules['aio_pika'], sys.modules['aiormq']) == first\n"
        "amqpfast.compat.uninstall()\n"
        "assert not any(k.split('.')[0] in ('aio_pika', 'aiormq') for k in sys.modules)\n"
        "print('ok')",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
