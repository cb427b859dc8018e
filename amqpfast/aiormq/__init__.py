"""aiormq's API on amqpfast: code written for aiormq 7.2 runs on amqpfast's core.

The classes are amqpfast's own, not wrappers: :class:`Connection` is
:class:`amqpfast.core.Connection`, :class:`Channel` is
:class:`amqpfast.core.Channel`, the exceptions are those of
:mod:`amqpfast.exceptions` and ``spec`` is pamqp's ``commands`` module, as in
aiormq. :func:`amqpfast.compat.install` makes ``import aiormq`` give this
package (and ``aiormq.abc``, ``aiormq.exceptions`` ... its modules)::

    import amqpfast.compat
    amqpfast.compat.install()

    import aiormq

    async with aiormq.connect("amqp://guest:guest@localhost/") as connection:
        channel = await connection.channel()
        declare_ok = await channel.queue_declare("hello", auto_delete=True)
        await channel.basic_publish(b"hi", routing_key=declare_ok.queue)
"""

from __future__ import annotations

from pamqp import commands as spec

from . import abc, exceptions
from .abc import DeliveredMessage
from .channel import Channel
from .connection import Connection, connect
from .exceptions import *  # noqa: F403 (aiormq exports every one of them)

#: the aiormq release whose API this package follows
__version__ = "7.2.4"

#: the modules of this package, by their name under ``aiormq``
SUBMODULES = ("abc", "channel", "connection", "exceptions", "tools", "types")

__all__ = [
    "Channel",
    "Connection",
    "DeliveredMessage",
    "abc",
    "connect",
    "exceptions",
    "spec",
    *exceptions.__all__,
]
