"""The conformance matrix: which core, which mode, which transport.

A :class:`Cell` is one point of the matrix; :class:`Endpoints` is what a
``check_*`` function receives (trio's ``stream_maker``, grown up): it makes
client/listener pairs in its cell and runs stream scripts there.  Checks
never look at how a cell is wired beyond what :class:`Endpoints` says
(``blocking``, ``transport``, whether time is fake), so the same checks run
unchanged over a second core.

Everything here goes through ``quicconn.*``, with one exception: which
cores are installed and what each can do (the backend registry and its
``Capability`` flags) is not public API yet, so it is read from
``quicconn._core`` here, and only here.
"""

from __future__ import annotations

import hashlib
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

import quicconn
from quicconn._core.interface import Capability
from tests.support.certs import CertFiles
from tests.support.stream_scripts import (
    TRANSPORTS,
    ConnConfig,
    ContextConfig,
    ListenerPool,
    Op,
    Outcome,
    Pair,
    Script,
    Setup,
    flatten,
    open_pair,
    run_on,
)

__all__ = [
    "CELLS",
    "MODES",
    "TRANSPORTS",
    "Capability",
    "Cell",
    "Endpoints",
    "blob",
    "core_capabilities",
    "digest",
]

#: Blocking mode of both connections (and so of their streams).
MODES = ("blocking", "nonblocking")

#: The settings a pair gets unless a check asks for others.
DEFAULT_CONN = ConnConfig()
DEFAULT_CTX = ContextConfig()


def available_cores() -> list[str]:
    """The installed core backends (``Context(core=...)`` names)."""
    from quicconn._core import registry

    return registry.available()


def core_capabilities(core: str) -> frozenset[Capability]:
    """What ``core`` can do, from its backend."""
    from quicconn._core import registry

    return registry.get(core).capabilities


@dataclass(frozen=True)
class Cell:
    """One point of the matrix."""

    core: str
    mode: str
    transport: str

    def __post_init__(self) -> None:
        assert self.mode in MODES, self.mode
        assert self.transport in TRANSPORTS, self.transport

    @property
    def id(self) -> str:
        return f"{self.core}-{self.mode}-{self.transport}"

    @property
    def blocking(self) -> bool:
        return self.mode == "blocking"

    def setup(self, *, timed: bool = False) -> Setup:
        """How to wire a pair.  ``timed``: the caller drives time from one
        thread, so a memory pair gets a FakeClock even when blocking."""
        fake = True if timed and self.transport == "memory" else None
        return Setup(self.transport, self.blocking, self.core, fake_clock=fake)


def cells(cores: list[str] | None = None) -> list[Cell]:
    return [
        Cell(core, mode, transport)
        for core in (available_cores() if cores is None else cores)
        for mode in MODES
        for transport in TRANSPORTS
    ]


#: The whole matrix: every installed core x mode x transport.
CELLS = cells()


def blob(size: int, seed: str = "x") -> bytes:
    """``size`` deterministic, non-repeating bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Endpoints:
    """Makes client/server pairs in one cell; what every check takes.

    * :meth:`connected` - a handshaken pair, both connections in the cell's
      blocking mode, driven by the check itself from one thread;
    * :meth:`unconnected` - a client not yet started and its listener;
    * :meth:`run` - a stream script, each side in its own thread when
      blocking, both cooperatively in one thread when not.
    """

    def __init__(self, cell: Cell, pki: CertFiles, pool: ListenerPool) -> None:
        self.cell = cell
        self.pki = pki
        self.pool = pool

    def __repr__(self) -> str:
        return f"Endpoints({self.cell.id})"

    @property
    def core(self) -> str:
        return self.cell.core

    @property
    def blocking(self) -> bool:
        return self.cell.blocking

    @property
    def transport(self) -> str:
        return self.cell.transport

    @property
    def capabilities(self) -> frozenset[Capability]:
        return core_capabilities(self.core)

    def require(self, *needed: Capability) -> None:
        """Skip, naming the capability, unless the core has all of ``needed``."""
        missing = [cap for cap in needed if cap not in self.capabilities]
        if missing:
            names = ", ".join(f"Capability.{cap.name} ({cap.value})" for cap in missing)
            pytest.skip(f"core {self.core!r} lacks {names}")

    def require_memory(self, why: str) -> None:
        """Skip on a transport that cannot do what a check must arrange."""
        if self.transport != "memory":
            pytest.skip(f"the {self.transport} transport cannot {why}")

    @contextmanager
    def unconnected(
        self,
        client_ctx: ContextConfig = DEFAULT_CTX,
        server_ctx: ContextConfig = DEFAULT_CTX,
        *,
        timed: bool = False,
    ) -> Iterator[Pair]:
        """A client (nonblocking, not started) and a listening server."""
        self.require(Capability.CLIENT, Capability.SERVER)  # both ends: this core
        with open_pair(
            self.cell.setup(timed=timed), self.pki, self.pool, client_ctx, server_ctx
        ) as pair:
            pair.client.set_blocking_mode(False)
            yield pair

    @contextmanager
    def connected(
        self,
        client: ConnConfig = DEFAULT_CONN,
        server: ConnConfig = DEFAULT_CONN,
        client_ctx: ContextConfig = DEFAULT_CTX,
        server_ctx: ContextConfig = DEFAULT_CTX,
        *,
        timed: bool = False,
    ) -> Iterator[Pair]:
        """A handshaken pair, settled (only the idle timer armed), both
        connections in the cell's blocking mode.

        ``timed``: the check measures time and drives both sides from one
        thread; a memory pair is then on a FakeClock in blocking mode too
        (where a blocking wait jumps the clock instead of sleeping).
        """
        with self.unconnected(client_ctx, server_ctx, timed=timed) as pair:
            pair.handshake(client, server)
            # Settle below the shorter idle timeout, or it would fire here.
            idle = min(client_ctx.idle_timeout, server_ctx.idle_timeout)
            pair.settle(quiet=min(1.0, idle / 3))
            assert pair.server is not None
            pair.client.set_blocking_mode(self.blocking)
            pair.server.set_blocking_mode(self.blocking)
            yield pair

    def run(
        self,
        name: str,
        *ops: Op | tuple[Op, ...],
        client: ConnConfig = DEFAULT_CONN,
        server: ConnConfig = DEFAULT_CONN,
        client_ctx: ContextConfig = DEFAULT_CTX,
        server_ctx: ContextConfig = DEFAULT_CTX,
    ) -> Outcome:
        """Run a stream script in this cell."""
        sc = Script(
            name,
            tuple(flatten(ops)),
            client=client,
            server=server,
            client_ctx=client_ctx,
            server_ctx=server_ctx,
        )
        with self.unconnected(client_ctx, server_ctx) as pair:
            pair.handshake(client, server)
            return run_on(sc, pair, label=f"{self.cell.id}: {name}")


# ----------------------------------------------------------------------
# driving a pair from one thread
# ----------------------------------------------------------------------


def drive(pair: Pair, done: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Pump the pair until ``done()``; fail after ``limit`` s (real or fake)."""
    deadline = time.monotonic() + limit
    fake_deadline = pair.clock.now() + 600.0 if pair.clock is not None else None
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        if pair.clock is not None:
            assert fake_deadline is not None
            assert pair.clock.now() < fake_deadline, f"no {what} in 600 s fake time"
        pair.pump()


def now(pair: Pair) -> float:
    return pair.clock.now() if pair.clock is not None else time.monotonic()


def wait_until_due(pair: Pair, obj: quicconn.Connection | quicconn.Listener) -> None:
    """Let time pass until ``obj.get_event_timeout()`` is due, and no longer.

    On a fake clock, by exactly the timeout; on the real clock by letting
    that much time pass (nothing is handled meanwhile, so the deadline
    cannot move).
    """
    timeout = obj.get_event_timeout()
    assert timeout is not None, "nothing is armed"
    if pair.clock is not None:
        pair.clock.advance(timeout)
        return
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        select.select([], [], [], left)


def readable(conn: quicconn.Connection, timeout: float = 0.0) -> bool:
    """Whether the connection's read descriptor polls readable."""
    fd = conn.get_rpoll_descriptor()
    return bool(select.select([fd], [], [], timeout)[0])
