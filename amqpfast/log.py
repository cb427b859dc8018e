"""The library's logger (aio-pika's ``aio_pika.log``, under amqpfast's name).

Everything amqpfast logs goes to ``logging.getLogger("amqpfast")`` or a child
of it. A NullHandler keeps it quiet until the application configures logging.
"""

from __future__ import annotations

import logging

__all__ = ["get_logger", "logger"]

logger: logging.Logger = logging.getLogger("amqpfast")
logger.addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The logger for module ``name``, a child of :data:`logger`.

    ``get_logger(__name__)`` in ``amqpfast.queue`` gives ``amqpfast.queue``;
    a name outside the package is put under ``amqpfast`` as it is.
    """
    prefix = logger.name + "."
    if name.startswith(prefix):
        name = name[len(prefix) :]
    elif name == logger.name:
        return logger
    return logger.getChild(name)
