"""One worker process of a group: what its target function is given.

A worker is started by :class:`~quicconn.scale.WorkerGroup` (``spawn``, a
fresh interpreter) with its own socket of the group's SO_REUSEPORT set,
already bound.  It runs the group's *target* function, ``target(worker,
*args)``, which makes its listener with :meth:`Worker.new_listener` and
serves until :attr:`Worker.stopping`.  When the target returns, every
connection its listener still has is closed (CONNECTION_CLOSE, an
application close with :data:`SHUTDOWN_REASON`), and a
:class:`WorkerReport` goes back to the supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from types import FrameType
from typing import Any

from .._core.quic_lb import QuicLbConfig
from .._core.wire import peek_destination_cid
from .._io.transport import Datagram, UdpTransport
from .._objects.context import Context
from .._objects.listener import Listener, close_connections
from .._objects.surface import events_reactor
from ._keys import ServerKeys
from ._toss import Tosser, group_address

#: The reason phrase of the close every connection gets when a worker stops.
SHUTDOWN_REASON = "server shutting down"
#: How long a stopping worker keeps sending what its closes left queued.
CLOSE_FLUSH_TIMEOUT = 1.0
#: linux/prctl.h
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the supervisor tells a worker process (pickled to it)."""

    index: int
    workers: int
    generation: int
    keys: ServerKeys
    quic_lb: QuicLbConfig
    target: Callable[..., Any]
    args: tuple[Any, ...]
    trace_datagrams: bool
    #: The kernel steers by connection ID (else: its 4-tuple hash, and
    #: nothing is tossed).
    steering: bool = True


@dataclass
class WorkerReport:
    """What a worker reported when it stopped (a quicconn extension).

    ``result`` is what the target returned; ``stats`` its listener's
    counters (``quicconn.ListenerStats`` as a dict); ``closed_at_stop`` the
    connections still open when it stopped, which it closed;
    ``datagrams`` (with ``trace_datagrams``) how many datagrams the kernel
    delivered to it for each destination connection ID; ``tossed_out`` and
    ``tossed_in`` the datagrams it passed to the worker owning their ID and
    received from another (docs/scaling.md, "Tossing").  ``exitcode`` is
    filled in by the supervisor (negative: killed by that signal).
    """

    index: int
    generation: int
    pid: int
    result: Any = None
    stats: dict[str, int] = field(default_factory=dict)
    closed_at_stop: int = 0
    datagrams: dict[bytes, int] = field(default_factory=dict)
    tossed_out: int = 0
    tossed_in: int = 0
    exitcode: int | None = None


class _GroupTransport(UdpTransport):
    """A worker's UDP transport: takes toss messages in (they come from the
    group's own address), and with ``trace`` counts the rest per
    destination connection ID."""

    def __init__(
        self,
        sock: socket.socket,
        ctx: Context,
        cid_length: int,
        tosser: Tosser | None,
        trace: bool,
    ) -> None:
        super().__init__(
            sock, use_gso=ctx.use_gso, use_gro=ctx.use_gro, dont_fragment=True
        )
        self.counts: Counter[bytes] | None = Counter() if trace else None
        self._cid_length = cid_length
        self._tosser = tosser
        self._own = None if tosser is None else group_address(sock)[:2]

    def recv_batch(self) -> list[Datagram]:
        batch = super().recv_batch()
        tosser, counts = self._tosser, self.counts
        if tosser is None and counts is None:
            return batch
        taken: list[Datagram] = []
        for data, addr in batch:
            if tosser is not None and addr[:2] == self._own:
                forwarded = tosser.receive(data, addr)
                if forwarded is not None:
                    taken.append(forwarded)  # type: ignore[arg-type]
                continue
            if counts is not None:
                counts[peek_destination_cid(data, self._cid_length) or b""] += 1
            taken.append((data, addr))
        return taken

    def send_now(self, data: bytes, addr: Any) -> None:
        """Send one datagram at once (toss messages); dropped if it cannot go."""
        with contextlib.suppress(OSError):
            self.socket.sendto(data, addr)


class Worker:
    """A worker process's view of its group (a quicconn extension).

    ``index`` (0 to ``workers - 1``) is the byte its connection IDs carry,
    by which the kernel steers their packets here; ``generation`` counts
    the workers that held this index before (0: the first).  ``quic_lb``
    and ``keys`` are what :meth:`new_listener` applies to a context.
    """

    def __init__(self, spec: WorkerSpec, sock: socket.socket, pipe: Pipe) -> None:
        self.index = spec.index
        self.workers = spec.workers
        self.generation = spec.generation
        self.keys = spec.keys
        self.quic_lb = dataclasses.replace(
            spec.quic_lb, server_use=spec.quic_lb.server_use + bytes([spec.index])
        )
        #: Set when the group stops (SIGTERM): the target should return.
        self.stop_event = threading.Event()
        self._stop_signalled = False
        self._sock: socket.socket | None = sock
        self._pipe = pipe
        self._spec = spec
        self._transport: _GroupTransport | None = None
        self._tosser: Tosser | None = None
        self._listener: Listener | None = None

    @property
    def stopping(self) -> bool:
        """Whether the group asked this worker to stop."""
        return self.stop_event.is_set()

    @property
    def listener(self) -> Listener | None:
        """The listener :meth:`new_listener` made, if it did."""
        return self._listener

    def new_listener(self, ctx: Context, flags: int = 0) -> Listener:
        """The worker's listener, on its socket of the group.

        ``ctx`` is a server context the target configured (certificate,
        ALPN, limits); its connection IDs (``ctx.quic_lb``: the group's
        configuration, this worker's index in the nonce) and keys
        (``stateless_reset_key``, ``retry_token_key``,
        ``session_ticket_key``) are set here.  One per worker.
        """
        sock = self._sock
        if sock is None:
            raise ValueError("a worker has one socket: new_listener() was called")
        if not isinstance(ctx, Context):
            raise TypeError(f"new_listener() takes a quicconn.Context, not {ctx!r}")
        ctx.quic_lb = self.quic_lb
        self.keys.apply(ctx)
        spec = self._spec
        tosser = None
        if spec.steering and spec.workers > 1:
            tosser = Tosser(
                self.index,
                self.workers,
                spec.quic_lb,
                self.keys.stateless_reset_key,
                group_address(sock),
                self._send_now,
            )
        transport = _GroupTransport(
            sock, ctx, self.quic_lb.cid_length, tosser, spec.trace_datagrams
        )
        listener = ctx.new_listener(transport, flags)
        reactor = events_reactor(listener)
        if tosser is not None and reactor is not None:
            reactor.route_watcher = tosser.on_route
            gate = reactor.unroutable_handler
            assert gate is not None

            def unroutable(data: bytes, addr: Any, now: float) -> None:
                if not tosser.forward(data, addr):
                    gate(data, addr, now)

            reactor.unroutable_handler = unroutable
        self._sock = None
        self._transport = transport
        self._tosser = tosser
        self._listener = listener
        self._pipe.send(("ready", self.index))
        return listener

    def _send_now(self, data: bytes, addr: Any) -> None:
        transport = self._transport
        if transport is not None:
            transport.send_now(data, addr)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: a second SIGTERM (the group's, right after the
        # one Linux sends when the supervising thread ends) can arrive
        # while this one is inside Event.set(), which holds a plain lock:
        # setting it again there would deadlock the worker.
        if self._stop_signalled:
            return
        self._stop_signalled = True
        self.stop_event.set()

    def _close_connections(self) -> int:
        """Close what the listener still has, and let the closes go out."""
        listener = self._listener
        if listener is None:
            return 0
        closed = close_connections(listener, 0, SHUTDOWN_REASON)
        deadline = time.monotonic() + CLOSE_FLUSH_TIMEOUT
        while listener.net_write_desired() and time.monotonic() < deadline:
            listener.handle_events()
            time.sleep(0.001)
        return closed

    def _report(self, result: Any, closed: int) -> WorkerReport:
        listener = self._listener
        stats = {} if listener is None else dataclasses.asdict(listener.stats)
        transport, tosser = self._transport, self._tosser
        counts = (
            {} if transport is None or transport.counts is None else transport.counts
        )
        return WorkerReport(
            index=self.index,
            generation=self.generation,
            pid=os.getpid(),
            result=result,
            stats=stats,
            closed_at_stop=closed,
            datagrams=dict(counts),
            tossed_out=0 if tosser is None else tosser.tossed_out,
            tossed_in=0 if tosser is None else tosser.tossed_in,
        )


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the supervisor dies (best effort): an
    orphaned worker would otherwise serve on, with no one to stop it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_main(spec: WorkerSpec, sock: socket.socket, pipe: Pipe) -> None:
    """A worker process's entry point (multiprocessing target)."""
    # Ctrl-C reaches the whole process group: the supervisor alone decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    worker = Worker(spec, sock, pipe)
    signal.signal(signal.SIGTERM, worker._stop)
    result: Any = None
    failed = False
    try:
        result = spec.target(worker, *spec.args)
    except BaseException:
        traceback.print_exc()
        failed = True
    closed = worker._close_connections()
    report = worker._report(result, closed)
    try:
        pipe.send(("report", report))
    except (OSError, ValueError):
        pass  # the supervisor is gone
    except Exception:  # the result does not pickle
        traceback.print_exc()
        report.result = None
        pipe.send(("report", report))
    if worker.listener is not None:
        worker.listener.free()
    if failed:
        raise SystemExit(1)


__all__ = ["SHUTDOWN_REASON", "Worker", "WorkerReport", "WorkerSpec", "worker_main"]
