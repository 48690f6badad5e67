"""Mapping request paths to files without ever leaving the document root."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote


def resolve_request_path(root: Path, target: str) -> Path | None:
    """The regular file under ``root`` that ``target`` names, or None.

    None (answer 404) for anything that is not a plain path below the root:
    no leading slash, ``..`` segments (also percent-encoded), NUL bytes,
    backslashes, invalid percent-encoding, directories, and paths whose real
    location (after following symlinks) is outside the root.  The target is
    percent-decoded exactly once, so ``%252e%252e`` names a file literally
    called ``%2e%2e``.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        return None
    try:
        decoded = unquote(path, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in decoded or "\\" in decoded:
        return None
    segments = [segment for segment in decoded.split("/") if segment not in ("", ".")]
    if any(segment == ".." for segment in segments):
        return None
    real_root = os.path.realpath(root)
    candidate = os.path.realpath(os.path.join(real_root, *segments))
    if os.path.commonpath([real_root, candidate]) != real_root:
        return None  # a symlink points outside the root
    if not os.path.isfile(candidate):
        return None
    return Path(candidate)


__all__ = [
    "resolve_request_path",
]
