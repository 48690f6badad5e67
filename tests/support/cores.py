"""Which QUIC core a test runs on, and skipping what that core cannot do.

Tests outside the conformance suite run on the default core (``"auto"``:
qh3 when installed, or ``$QUICCONN_CORE``).  A test that rests on something
only some cores do starts with :func:`require`, which skips naming the
missing :class:`~quicconn._core.interface.Capability`, never silently.  As
in tests/conformance/harness.py, the registry and its capability flags are
read from ``quicconn._core``: they are not public API.

A test that pins what one core does (its own DATAGRAM frames, keep-alive,
ACK policies, credit) takes the ``each_core`` fixture (tests/conftest.py):
it then runs once on each of :func:`pinned_cores`, so that the suite's one
run on the default core (CI) still checks every core where it matters.
"""

from __future__ import annotations

import os

import pytest

import quicconn
from quicconn._core import registry
from quicconn._core.interface import Capability

__all__ = [
    "Capability",
    "capabilities",
    "core_with",
    "default_core",
    "pinned_cores",
    "require",
]


def default_core(role: int = quicconn.CLIENT) -> str:
    """The core a ``quicconn.Context(role)`` runs on."""
    return quicconn.Context(role).core


def pinned_cores() -> list[str]:
    """The cores an ``each_core`` test runs on: the one ``$QUICCONN_CORE``
    names, when set (the whole suite runs there then: once is enough),
    else every installed core."""
    chosen = os.environ.get(registry.ENVIRONMENT_VARIABLE)
    if chosen and chosen != registry.AUTO:
        return [chosen]
    return list(registry.available())


def capabilities(core: str | None = None) -> frozenset[Capability]:
    """What ``core`` (default: the default core) can do."""
    return registry.get(core or default_core()).capabilities


def require(*needed: Capability, core: str | None = None) -> None:
    """Skip, naming the capability, unless the core has all of ``needed``."""
    name = core or default_core()
    missing = [cap for cap in needed if cap not in capabilities(name)]
    if missing:
        names = ", ".join(f"Capability.{cap.name} ({cap.value})" for cap in missing)
        pytest.skip(f"core {name!r} lacks {names}")


def core_with(*needed: Capability, role: int = quicconn.SERVER) -> str:
    """The default core if it can do all of ``needed``, else an installed
    core that can: for a peer a test needs to behave a certain way while
    the object under test stays on the default core."""
    for name in (default_core(role), *registry.available()):
        if all(cap in capabilities(name) for cap in needed):
            return name
    raise AssertionError(f"no installed core can do {needed}")
