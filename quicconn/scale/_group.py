"""``WorkerGroup``: N worker processes serving one UDP address.

The supervisor (the process that makes the group) binds one socket per
worker to the same address with SO_REUSEPORT, attaches the steering
program (:mod:`quicconn._io.steering`) to the group, and starts each
worker (``spawn``) with its socket.  It keeps every socket open itself:
the kernel indexes the group's sockets in the order they were bound and
moves the last one into any gap a closed socket leaves, so a socket
closed when a worker dies would change which worker every index names.
A replacement worker therefore inherits its predecessor's socket (and
whatever datagrams waited in it) and index; the connections the dead
worker held are gone, and the replacement answers their packets with
stateless resets the clients accept (the reset key is shared).

``stop()`` asks every worker to stop (SIGTERM): each target returns, each
worker closes the connections it still has (the clients learn at once,
not after an idle timeout) and reports, and the sockets close.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from typing import Any

from .._core.quic_lb import QuicLbConfig
from .._io import steering
from ._keys import ServerKeys
from ._toss import steering_layout
from ._worker import WorkerReport, WorkerSpec, worker_main

logger = logging.getLogger("quicconn.scale")

#: A worker index replaced more often than this within
#: :data:`RESTART_WINDOW` seconds makes the group give up (a crash loop).
RESTART_LIMIT = 5
RESTART_WINDOW = 30.0
#: The QUIC-LB configuration of a group that is given none: server ID 1,
#: 6 nonce bytes (the worker index and 5 random ones): 8-byte IDs.
DEFAULT_QUIC_LB = QuicLbConfig(b"\x01", nonce_length=6)

_SPAWN = multiprocessing.get_context("spawn")


@dataclasses.dataclass
class _Slot:
    """One worker index: its socket, and the process holding it now."""

    index: int
    sock: socket.socket
    generation: int = -1
    process: BaseProcess | None = None
    pipe: Pipe | None = None
    ready: bool = False
    report: WorkerReport | None = None
    restarts: deque[float] = dataclasses.field(default_factory=deque)


class WorkerGroup:
    """Worker processes sharing one UDP address (a quicconn extension).

    ``target(worker, *args)`` runs in each worker (a module-level function:
    workers are fresh interpreters); it makes its listener with
    ``worker.new_listener(ctx)`` and serves until ``worker.stopping``.
    ``workers`` defaults to the number of CPUs.  ``quic_lb`` is the host's
    QUIC-LB configuration (its server ID is what a load balancer routes
    by; each worker's index follows it in the nonce); ``keys`` the pool's
    shared keys (default: fresh ones, enough for one host).
    ``steering=False`` leaves the kernel's 4-tuple hash in charge (which a
    NAT rebinding defeats: for comparison only); ``trace_datagrams`` makes
    each worker count its datagrams per connection ID (diagnostics).

    ``with WorkerGroup(...) as group:`` starts it and stops it cleanly.
    """

    def __init__(
        self,
        target: Callable[..., Any],
        address: tuple[str, int],
        *,
        workers: int | None = None,
        args: tuple[Any, ...] = (),
        quic_lb: QuicLbConfig | None = None,
        keys: ServerKeys | None = None,
        steering: bool = True,
        trace_datagrams: bool = False,
        start_timeout: float = 60.0,
    ) -> None:
        if not callable(target):
            raise TypeError("target must be a module-level function")
        count = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(count, int) or not 1 <= count <= 255:
            raise ValueError(f"workers must be 1-255, not {workers!r}")
        config = DEFAULT_QUIC_LB if quic_lb is None else quic_lb
        try:
            dataclasses.replace(config, server_use=config.server_use + b"\x00")
        except ValueError as exc:
            raise ValueError(
                f"quic_lb leaves no nonce byte for the worker index: {exc}"
            ) from exc
        self._target = target
        self._args = tuple(args)
        self._requested = address
        self.workers = count
        self.quic_lb = config
        self.keys = keys if keys is not None else ServerKeys.generate()
        self.steering = steering
        self._trace = trace_datagrams
        self._start_timeout = start_timeout
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = _SPAWN.Pipe(duplex=False)
        self._supervisor: threading.Thread | None = None
        #: Reports of every worker that stopped or died, in order.
        self.reports: list[WorkerReport] = []
        #: Workers replaced after they died.
        self.restarts = 0
        #: Why the group gave up, if it did (a worker crash loop).
        self.failure: str | None = None

    # -- starting -----------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The address the group serves (the port chosen if 0 was asked)."""
        if not self._slots:
            raise ValueError("the group has not started")
        host, port = self._slots[0].sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def pids(self) -> list[int | None]:
        """The process ID serving each index now."""
        with self._lock:
            return [
                None if slot.process is None else slot.process.pid
                for slot in self._slots
            ]

    def kernel_drops(self) -> list[int]:
        """Datagrams the kernel dropped per worker socket (its receive
        buffer was full: the worker fell behind), from /proc/net/udp."""
        inodes = {
            os.fstat(slot.sock.fileno()).st_ino: slot.index for slot in self._slots
        }
        drops = [0] * len(self._slots)
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with contextlib.suppress(OSError), open(table) as fp:
                next(fp, None)
                for line in fp:
                    columns = line.split()
                    index = inodes.get(int(columns[9]))
                    if index is not None:
                        drops[index] = int(columns[-1])
        return drops

    def start(self) -> None:
        """Bind the sockets, attach the steering program, start the workers
        and wait until each has its listener (RuntimeError if one cannot)."""
        if self._slots:
            raise ValueError("the group was started already")
        sockets = steering.reuseport_group(self._requested, self.workers)
        try:
            if self.steering:
                steering.attach(sockets[0], steering_layout(self.quic_lb, self.workers))
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        self._slots = [_Slot(i, sock) for i, sock in enumerate(sockets)]
        for slot in self._slots:
            self._spawn(slot)
        deadline = time.monotonic() + self._start_timeout
        while not all(slot.ready for slot in self._slots):
            remaining = deadline - time.monotonic()
            dead = [s for s in self._slots if s.process and not s.process.is_alive()]
            if remaining <= 0 or dead:
                self.stop()
                why = "timed out" if remaining <= 0 else "a worker exited"
                raise RuntimeError(f"the worker group did not start: {why}")
            self._pump(min(remaining, 0.5))
        self._supervisor = threading.Thread(
            target=self._supervise, name="quicconn-supervisor", daemon=True
        )
        self._supervisor.start()

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        slot.ready = False
        slot.report = None
        spec = WorkerSpec(
            index=slot.index,
            workers=self.workers,
            generation=slot.generation,
            keys=self.keys,
            quic_lb=self.quic_lb,
            target=self._target,
            args=self._args,
            trace_datagrams=self._trace,
            steering=self.steering,
        )
        reader, writer = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(
            target=worker_main,
            args=(spec, slot.sock, writer),
            name=f"quicconn-worker-{slot.index}",
        )
        process.start()
        writer.close()
        slot.process = process
        slot.pipe = reader

    # -- supervising --------------------------------------------------------

    def _pump(self, timeout: float | None) -> None:
        """Wait for messages or exits; take messages in (supervisor side)."""
        with self._lock:
            pipes = {slot.pipe: slot for slot in self._slots if slot.pipe is not None}
        ready = wait_for([*pipes, self._wake_r], timeout)
        for pipe in ready:
            slot = pipes.get(pipe)  # type: ignore[call-overload]
            if slot is None:
                with contextlib.suppress(EOFError, OSError):
                    self._wake_r.recv()
                continue
            self._take_message(slot)

    def _take_message(self, slot: _Slot) -> None:
        pipe = slot.pipe
        assert pipe is not None
        try:
            kind, payload = pipe.recv()
        except (EOFError, OSError):
            slot.pipe = None
            pipe.close()
            return
        if kind == "ready":
            slot.ready = True
        elif kind == "report":
            slot.report = payload

    def _supervise(self) -> None:
        while not self._stopping:
            with self._lock:
                sentinels = {
                    slot.process.sentinel: slot
                    for slot in self._slots
                    if slot.process is not None
                }
                pipes = {
                    slot.pipe: slot for slot in self._slots if slot.pipe is not None
                }
            ready = wait_for([*sentinels, *pipes, self._wake_r])
            if self._stopping:
                return
            for item in ready:
                if not isinstance(item, int) and item in pipes:
                    slot = pipes[item]
                    if slot.pipe is item:
                        self._take_message(slot)
            for item in ready:
                if isinstance(item, int) and item in sentinels:
                    self._replace(sentinels[item])

    def _replace(self, slot: _Slot) -> None:
        """A worker died (not asked to stop): start another in its place."""
        process = slot.process
        assert process is not None
        process.join()
        while slot.pipe is not None:
            self._take_message(slot)
        self._record(slot, process)
        now = time.monotonic()
        slot.restarts.append(now)
        while slot.restarts and now - slot.restarts[0] > RESTART_WINDOW:
            slot.restarts.popleft()
        if len(slot.restarts) > RESTART_LIMIT:
            self.failure = (
                f"worker {slot.index} died {len(slot.restarts)} times in "
                f"{RESTART_WINDOW:.0f} s (exit status {process.exitcode})"
            )
            logger.error("giving up: %s", self.failure)
            threading.Thread(target=self.stop, daemon=True).start()
            return
        logger.warning(
            "worker %d (pid %s) died with exit status %s: replacing it",
            slot.index,
            process.pid,
            process.exitcode,
        )
        with self._lock:
            if self._stopping:
                return
            self._spawn(slot)
            self.restarts += 1

    def _record(self, slot: _Slot, process: BaseProcess) -> None:
        report = slot.report or WorkerReport(
            index=slot.index, generation=slot.generation, pid=process.pid or 0
        )
        report.exitcode = process.exitcode
        self.reports.append(report)
        slot.report = None

    # -- stopping -----------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> list[WorkerReport]:
        """Stop every worker cleanly (each closes its connections first) and
        release the sockets; the reports of the workers that stopped.

        Workers still running after ``timeout`` seconds are killed.
        Idempotent.
        """
        with self._lock:
            if self._stopping:
                already = True
            else:
                already = False
                self._stopping = True
        if already:
            self._stopped.wait()
            return [r for r in self.reports if r.exitcode is not None]
        with contextlib.suppress(OSError):
            self._wake_w.send(None)
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        live = [slot for slot in self._slots if slot.process is not None]
        for slot in live:
            with contextlib.suppress(OSError):
                os.kill(slot.process.pid or 0, signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        final: list[WorkerReport] = []
        for slot in live:
            process = slot.process
            assert process is not None
            while process.is_alive() or slot.pipe is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and process.is_alive():
                    process.kill()
                waitables: list[Any] = [process.sentinel]
                if slot.pipe is not None:
                    waitables.append(slot.pipe)
                for item in wait_for(waitables, max(remaining, 0.1)):
                    if item is slot.pipe:
                        self._take_message(slot)
                if not process.is_alive() and slot.pipe is not None:
                    while slot.pipe is not None:
                        self._take_message(slot)
            process.join()
            self._record(slot, process)
            final.append(self.reports[-1])
        for slot in self._slots:
            slot.sock.close()
        self._wake_r.close()
        self._wake_w.close()
        self._stopped.set()
        return final

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the group stopped (or gave up: see :attr:`failure`)."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> WorkerGroup:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


__all__ = ["DEFAULT_QUIC_LB", "RESTART_LIMIT", "WorkerGroup"]
