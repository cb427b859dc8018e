"""aiormq's deprecated ``types`` module: the names of :mod:`amqpfast.aiormq.abc`."""

from __future__ import annotations

import warnings

from .abc import *  # noqa: F403
from .abc import __all__ as __all__

warnings.warn(
    "aiormq.types is deprecated: use aiormq.abc", category=DeprecationWarning, stacklevel=2
)
