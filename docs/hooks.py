"""MkDocs hook: turn the Sphinx roles left in rendered docstrings into links.

amqpfast's docstrings use Sphinx roles (:class:`~amqpfast.Connection`,
:meth:`close` ...), which mkdocstrings' Sphinx-style parser leaves as text:
":class:" followed by the code. This hook replaces each with an *optional*
mkdocs-autorefs reference, so a name documented in the API reference becomes a
link and any other name stays plain code (no warning either way).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(
    r":(?:class|meth|func|attr|exc|mod|data|obj|const):<code>(~?)([\w.]+)(\(\))?</code>"
)


def _reference(match: re.Match[str]) -> str:
    short, target, call = match.group(1), match.group(2), match.group(3) or ""
    title = target.rsplit(".", 1)[-1] if short else target
    identifier = target if target.startswith("amqpfast") else f"amqpfast.{target}"
    return f'<autoref identifier="{identifier}" optional><code>{title}{call}</code></autoref>'


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub(_reference, html)
