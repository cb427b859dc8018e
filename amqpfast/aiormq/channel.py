"""aiormq's ``channel`` module: the channel class."""

from __future__ import annotations

from typing import Any

from ..core.channel import Channel
from ..exceptions import channel_error

__all__ = ["Channel", "exception_by_code"]


def exception_by_code(frame: Any) -> Exception:
    """The exception for the broker's Channel.Close frame."""
    return channel_error(frame.reply_code or 0, frame.reply_text or "")
