"""A griffe extension for the API reference (mkdocs.yml loads it).

quicconn's docstrings use Sphinx's inline roles (``:class:`~quicconn.X```,
``:meth:`read```); mkdocstrings renders docstrings as Markdown, where a role
would show up as literal text.  This turns each role into a code span of the
name a reader would see (``X`` for ``~quicconn.X``, the text of
``text <target>``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?[a-z]+:`([^`]+)`")


def _shown(target: str) -> str:
    text = target.strip()
    match = re.fullmatch(r"(.*?)\s*<[^>]+>", text)
    if match:
        return match.group(1)
    if text.startswith("~"):
        return text[1:].rsplit(".", 1)[-1]
    return text


def plain_roles(text: str) -> str:
    return _ROLE.sub(lambda m: f"`{_shown(m.group(1))}`", text)


class RstRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)


__all__ = ["RstRoles", "plain_roles"]
