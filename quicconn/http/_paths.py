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


def local_path(root: Path, target: str) -> Path:
    """Where a download of ``target`` (a URL's path) is saved under ``root``.

    The URL's directories are kept (``/sub/hello.txt`` is
    ``root/sub/hello.txt``, so ``/hello.txt`` and ``/sub/hello.txt`` never
    meet), a path ending in ``/`` gets ``index.html``, and the query and
    fragment are dropped.  Each segment is percent-decoded once.  Raises
    ValueError for a path that could leave ``root``: a ``..`` segment (also
    percent-encoded), a segment that decodes to a ``/``, a backslash or NUL,
    invalid percent-encoding, or a directory inside ``root`` that is a
    symlink leading out of it.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise ValueError(f"{target!r} is not an absolute URL path")
    raw_segments = path.split("/")[1:]
    names: list[str] = []
    for raw in raw_segments:
        try:
            name = unquote(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            raise ValueError(f"{target!r} has invalid percent-encoding") from None
        if name in ("", "."):
            continue
        if name == ".." or any(ch in name for ch in "/\\\x00"):
            raise ValueError(
                f"{target!r} has a segment {name!r} that would leave the output "
                "directory"
            )
        names.append(name)
    if not names or raw_segments[-1] in ("", "."):
        names.append("index.html")
    candidate = Path(root, *names)
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(candidate.parent)
    if os.path.commonpath([real_root, real_parent]) != real_root:
        raise ValueError(
            f"{target!r} would be saved through a symlink leading out of {root}"
        )
    return candidate


__all__ = [
    "local_path",
    "resolve_request_path",
]
