"""Which core backends exist, which are installed, and which one to use.

``Context(core=...)`` and the ``QUICCONN_CORE`` environment variable name a
backend; ``"auto"`` takes the first installed one, in :data:`PREFERENCE`
order (qh3, then aioquic), that has every capability the context needs.
A backend module is imported only when it is first used, so an
uninstalled library costs nothing.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Iterable

from .interface import Capability, CoreBackend

#: Backends by name: the module that holds it, and the library it needs.
_BACKENDS: dict[str, tuple[str, str]] = {
    "aioquic": ("quicconn._core.aioquic.backend", "aioquic"),
    "qh3": ("quicconn._core.qh3.backend", "qh3"),
}

#: The order ``"auto"`` tries installed backends in (fastest first).
PREFERENCE: tuple[str, ...] = ("qh3", "aioquic")

#: The environment variable that chooses a core when a context does not.
ENVIRONMENT_VARIABLE = "QUICCONN_CORE"

AUTO = "auto"

_loaded: dict[str, CoreBackend] = {}


def known() -> list[str]:
    """Every backend quicconn has, installed or not."""
    return list(_BACKENDS)


@functools.cache
def _installed(library: str) -> bool:
    """Whether ``library`` can be imported (looked up once per process: a
    context resolves its backend for every connection it makes)."""
    return importlib.util.find_spec(library) is not None


def available() -> list[str]:
    """The backends whose QUIC library is installed, in preference order."""
    return [name for name in PREFERENCE if _installed(_BACKENDS[name][1])]


def get(name: str) -> CoreBackend:
    """The backend called ``name``; ValueError if unknown or not installed."""
    found = _loaded.get(name)
    if found is not None:
        return found
    if name not in _BACKENDS:
        raise ValueError(
            f"unknown QUIC core {name!r}: choose one of {', '.join(known())} "
            f"or {AUTO!r}"
        )
    module_name, library = _BACKENDS[name]
    if not _installed(library):
        raise ValueError(
            f"the {name!r} QUIC core needs the {library!r} package: "
            f"pip install {library}"
        )
    backend: CoreBackend = importlib.import_module(module_name).BACKEND
    _loaded[name] = backend
    return backend


def resolve(name: str | None = None, needs: Iterable[Capability] = ()) -> CoreBackend:
    """The backend for a context: ``name``, else ``$QUICCONN_CORE``, else auto.

    An explicit choice that lacks a capability in ``needs`` is a
    ValueError naming what is missing; ``"auto"`` skips such backends.
    """
    wanted = frozenset(needs)
    choice = name or os.environ.get(ENVIRONMENT_VARIABLE) or AUTO
    if choice != AUTO:
        backend = get(choice)
        missing = wanted - backend.capabilities
        if missing:
            raise ValueError(
                f"the {choice!r} QUIC core cannot do "
                f"{', '.join(sorted(c.value for c in missing))}"
            )
        return backend
    for candidate in available():
        backend = get(candidate)
        if wanted <= backend.capabilities:
            return backend
    raise ValueError(
        "no installed QUIC core can do "
        f"{', '.join(sorted(c.value for c in wanted)) or 'anything'}: "
        "pip install aioquic"
    )


def capability_table() -> str:
    """docs/cores.md's table: every :class:`Capability`, and which backend
    has it (Markdown; a backend not installed here is marked so)."""
    names = known()
    header = "| capability | " + " | ".join(f"`{n}`" for n in names) + " |"
    lines = [header, "|---" * (len(names) + 1) + "|"]
    installed = set(available())
    for capability in Capability:
        cells = []
        for name in names:
            if name not in installed:
                cells.append("(not installed)")
            else:
                cells.append("yes" if capability in get(name).capabilities else "no")
        lines.append(
            f"| `{capability.name}`: {capability.value} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "AUTO",
    "ENVIRONMENT_VARIABLE",
    "PREFERENCE",
    "available",
    "capability_table",
    "get",
    "known",
    "resolve",
]
