"""Async jobs (MODE_ASYNC): core work that pauses while an engine signs.

OpenSSL runs a TLS call in ``SSL_MODE_ASYNC`` inside an ``ASYNC_JOB`` (a
fibre).  When an async-capable engine is asked for a private-key operation
it submits the work, registers a wait descriptor in the connection's
``ASYNC_WAIT_CTX`` and pauses the job; the call returns
``SSL_ERROR_WANT_ASYNC``; retrying the call resumes the job where it
stopped.  This module is that machinery for quicconn, with greenlets as the
fibres:

* :class:`WaitFd` / :class:`WaitCtx` - ``ASYNC_WAIT_CTX``: the wait
  descriptors (readable once the engine finished), the added/deleted
  bookkeeping behind ``SSL_get_changed_async_fds`` and the engine status
  behind ``SSL_get_async_status``;
* :class:`AsyncJob` and the job runner - ``ASYNC_JOB`` and
  ``ASYNC_start_job``/``ASYNC_pause_job``;
* :class:`JobPool` - the job limit of ``ASYNC_init_thread``
  (``ASYNC_NO_JOBS`` becomes ``SSL_ERROR_WANT_ASYNC_JOB``);
* :class:`JobHost` - one connection's side: it runs each piece of the
  core's packet processing in a job, queues (boundedly) the datagrams that
  arrive while a job is paused, and resumes the job once the engine
  reports back.

A greenlet can only run in the thread that made it.  An event loop (one
thread ticking from nonblocking calls) runs its jobs inline; jobs started by
blocking calls, or on reactors several threads drive, live in a dedicated
job thread, so a paused handshake can be finished from any thread (OpenSSL
requires the same thread).  See docs/async.md.  Nothing here imports
``aioquic.quic``: the job body is an opaque callable and the signing request
is described by :mod:`quicconn._asyncjob.engine`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import greenlet

from .._constants import (
    ASYNC_STATUS_EAGAIN,
    ASYNC_STATUS_ERR,
    ASYNC_STATUS_OK,
    ASYNC_STATUS_UNSUPPORTED,
)
from .engine import AsyncEngine, SignRequest, sign_with_scheme

logger = logging.getLogger("quicconn.asyncjob")

#: Datagrams kept for a connection while its job is paused; later ones are
#: dropped (QUIC retransmits what matters).
BACKLOG_LIMIT = 64

Step = Callable[[float], None]


class AsyncSignError(Exception):
    """The engine failed (``ASYNC_STATUS_ERR``); raised inside the job."""


# ---------------------------------------------------------------------------
# wait descriptors (ASYNC_WAIT_CTX)
# ---------------------------------------------------------------------------


class WaitFd:
    """A descriptor that polls readable once signalled: an eventfd, or a pipe.

    As OpenSSL asks, the application only waits for readability and never
    reads it; quicconn clears it when the job resumes.
    """

    __slots__ = ("_read_fd", "_write_fd")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._read_fd = self._write_fd = fd
        else:  # pragma: no cover - platforms without eventfd
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        return self._read_fd

    def signal(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, (1).to_bytes(8, "little"))

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, 4096)

    def close(self) -> None:
        os.close(self._read_fd)
        if self._write_fd != self._read_fd:
            os.close(self._write_fd)


class WaitCtx:
    """One connection's ``ASYNC_WAIT_CTX``: wait fds, changes, engine status.

    Fds are keyed by the engine that uses them and stay stable for the
    connection's lifetime, as OpenSSL encourages: none is deleted before the
    connection goes, so the deleted list of :meth:`changed_fds` is always
    empty.  The added list covers the changes since the last ``WANT_ASYNC``:
    it is reset when a paused job is resumed, so whatever an engine adds
    before the job pauses again is reported after that pause, once.
    """

    def __init__(self) -> None:
        self._fds: dict[int, WaitFd] = {}
        self._added: list[int] = []
        self.status = ASYNC_STATUS_UNSUPPORTED

    def fd_for(self, key: object) -> WaitFd:
        """The wait fd for ``key`` (an engine), made on first use."""
        found = self._fds.get(id(key))
        if found is None:
            found = self._fds[id(key)] = WaitFd()
            self._added.append(found.fileno())
        return found

    def all_fds(self) -> list[int]:
        return [fd.fileno() for fd in self._fds.values()]

    def changed_fds(self) -> tuple[list[int], list[int]]:
        return list(self._added), []

    def reset_counts(self) -> None:
        self._added.clear()

    def close(self) -> None:
        for fd in self._fds.values():
            fd.close()
        self._fds.clear()
        self.reset_counts()


# ---------------------------------------------------------------------------
# jobs (ASYNC_JOB) and the thread their greenlets live in
# ---------------------------------------------------------------------------


class _JobGreenlet(greenlet.greenlet):  # type: ignore[misc]
    job: AsyncJob


class AsyncJob:
    """One paused-or-running piece of core work (``ASYNC_JOB``)."""

    __slots__ = ("finished", "glet", "home", "host", "paused", "ready")

    def __init__(self, host: JobHost) -> None:
        self.host = host
        self.glet: _JobGreenlet | None = None
        #: The thread the greenlet lives in: only it can switch to it.
        self.home: threading.Thread | None = None
        #: The engine finished (or asked for a retry): the job may resume.
        self.ready = False
        self.finished = False

    def pause(self) -> None:
        """Switch out of the job (ASYNC_pause_job); returns when resumed."""
        glet = self.glet
        assert glet is not None and glet.parent is not None
        glet.parent.switch()


def current_job() -> AsyncJob | None:
    """The job the caller runs in (ASYNC_get_current_job), or None."""
    glet = greenlet.getcurrent()
    return glet.job if isinstance(glet, _JobGreenlet) else None


def _job_body(job: AsyncJob, step: Step, now: float) -> None:
    try:
        step(now)
    except greenlet.GreenletExit:
        pass  # abandoned: the connection was freed while paused
    except Exception:
        logger.exception("an async job failed")
    finally:
        job.finished = True


class _JobRunner:
    """Starts, resumes and abandons job greenlets, in the right thread.

    A greenlet can only run in the thread that made it.  A reactor driven
    by one thread (an event loop) runs its jobs *inline*, in that thread:
    starting and resuming cost one greenlet switch.  Once several threads
    drive a reactor, its new jobs live in one dedicated runner thread
    instead, and whichever thread ticks hands the switch over to it and
    waits, so a paused handshake can be finished from any thread
    (OpenSSL requires the thread that started it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], None], threading.Lock, list[BaseException]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the runner thread; return when it returns."""
        thread = self._thread
        if thread is threading.current_thread():
            fn()
            return
        if thread is None:
            thread = self._start()
        reply = threading.Lock()
        reply.acquire()
        errors: list[BaseException] = []
        self._requests.put((fn, reply, errors))
        reply.acquire()
        if errors:
            raise errors[0]

    def _start(self) -> threading.Thread:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._main, name="quicconn-async-jobs", daemon=True
                )
                self._thread.start()
            return self._thread

    def _main(self) -> None:
        get = self._requests.get
        while True:
            item = get()
            if item is None:
                return
            fn, reply, errors = item
            try:
                fn()
            except BaseException as exc:  # reported to the caller
                errors.append(exc)
            reply.release()

    @staticmethod
    def _enter(job: AsyncJob, step: Step, now: float) -> None:
        glet = _JobGreenlet(run=_job_body)  # parent: the current greenlet
        glet.job = job
        job.glet = glet
        job.home = threading.current_thread()
        glet.switch(job, step, now)

    @staticmethod
    def _switch_in(job: AsyncJob) -> None:
        glet = job.glet
        assert glet is not None
        glet.parent = greenlet.getcurrent()  # pause() comes back here
        glet.switch()

    def start(self, job: AsyncJob, step: Step, now: float, inline: bool) -> None:
        if inline:
            self._enter(job, step, now)
        else:
            self.call(lambda: self._enter(job, step, now))

    def can_resume(self, job: AsyncJob) -> bool:
        """Whether the calling thread can resume ``job`` (now or by hand-over)."""
        home = job.home
        return home is threading.current_thread() or (
            home is not None and home is self._thread
        )

    def resume(self, job: AsyncJob) -> None:
        if job.home is threading.current_thread():
            self._switch_in(job)
        else:
            self.call(lambda: self._switch_in(job))

    def kill(self, job: AsyncJob) -> None:
        glet = job.glet
        job.finished = True
        if glet is None or glet.dead:
            return

        def throw() -> None:
            glet.parent = greenlet.getcurrent()
            glet.throw(greenlet.GreenletExit)

        if job.home is threading.current_thread():
            throw()
        elif job.home is self._thread:
            self.call(throw)
        # else: another thread's greenlet; dropped here, collected there.

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self._requests = queue.SimpleQueue()
        self._thread = None


_RUNNER = _JobRunner()


class JobPool:
    """The job limit (``ASYNC_init_thread``'s ``max_size``; 0 = no limit).

    quicconn has one pool per process, since jobs are not tied to threads.
    Hosts refused a job wait in line and are told when one is released.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.max_size = 0
        self.in_use = 0
        self._waiting: deque[JobHost] = deque()

    def acquire(self, host: JobHost) -> AsyncJob | None:
        with self._lock:
            if self.max_size and self.in_use >= self.max_size:
                if host not in self._waiting:
                    self._waiting.append(host)
                return None
            self.in_use += 1
        return AsyncJob(host)

    def release(self) -> None:
        with self._lock:
            self.in_use -= 1
            waiter = self._waiting.popleft() if self._waiting else None
        if waiter is not None:
            waiter.notify_ready()

    def forget(self, host: JobHost) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._waiting.remove(host)

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        self.in_use = 0
        self._waiting.clear()


POOL = JobPool()


def async_init_thread(max_size: int = 0, init_size: int = 0) -> None:
    """Limit the number of async jobs (ASYNC_init_thread).

    With ``max_size`` jobs paused, a connection that needs another one
    gets ``WantAsyncJobError`` until one finishes; 0 means no limit (the
    default).  quicconn's pool is per process, not per thread, because a
    paused job can be resumed from any thread.  ``init_size`` is accepted
    for compatibility: greenlets are made on demand.
    """
    if max_size < 0 or init_size < 0:
        raise ValueError("max_size and init_size must be >= 0")
    if max_size and init_size > max_size:
        raise ValueError("init_size cannot exceed max_size")
    POOL.max_size = max_size


def async_cleanup_thread() -> None:
    """Remove the job limit again (ASYNC_cleanup_thread)."""
    POOL.max_size = 0


def _after_fork_in_child() -> None:
    _RUNNER.reset_after_fork()
    POOL.reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------
# a connection's side
# ---------------------------------------------------------------------------


class Resumed(enum.Enum):
    """What :meth:`JobHost.resume` achieved."""

    DONE = "done"  #: resumed, or nothing to resume
    ELSEWHERE = "elsewhere"  #: only the thread that started the job can
    LOST = "lost"  #: that thread exited: the work is lost, close the connection


class HostState(enum.Enum):
    IDLE = "idle"  #: no job; core work runs at once (inside a new job)
    PAUSED = "paused"  #: a job waits for its engine
    NO_JOB = "no_job"  #: work waits for a free job (ASYNC_NO_JOBS)
    CLOSED = "closed"


class JobHost:
    """Runs one connection's core work in async jobs; see the module docstring.

    ``notify_ready`` (any thread) asks the reactor to call :meth:`resume`
    soon; ``wake_app`` runs the application's async callback.  Everything
    else is called with the reactor lock held.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        notify_ready: Callable[[], None],
        wake_app: Callable[[], None],
        inline: Callable[[], bool] = lambda: False,
        backlog_limit: int = BACKLOG_LIMIT,
    ) -> None:
        self.engine = engine
        self._inline = inline
        self.wait_ctx = WaitCtx()
        self._notify = notify_ready
        self._wake_app = wake_app
        self._lock = threading.Lock()
        self._job: AsyncJob | None = None
        self._backlog: deque[Step] = deque()
        self._backlog_limit = backlog_limit
        self.state = HostState.IDLE
        #: Why the async work failed, for the error the application sees.
        self.failure: str | None = None
        #: Datagrams dropped because the backlog was full.
        self.dropped = 0
        #: The handshake's signature was made.
        self.signed = False

    # -- queries ----------------------------------------------------------

    @property
    def waiting(self) -> bool:
        """A job is paused (SSL_waiting_for_async)."""
        return self._job is not None

    @property
    def busy(self) -> bool:
        """Core work is outstanding: a paused job or queued datagrams."""
        return self._job is not None or bool(self._backlog)

    def intercepts(self, handshake_complete: bool) -> bool:
        """Whether core work must go through :meth:`run` now.

        While work is outstanding, always (it queues).  Otherwise only until
        the handshake's one signature was made: TLS 1.3 signs once per
        handshake, so later packets cannot pause and need no job.
        """
        if self._job is not None or self._backlog:
            return True
        return not handshake_complete and not self.signed

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    # -- core work (reactor lock held) -------------------------------------

    def run(self, step: Step, now: float) -> None:
        """Run ``step(now)`` in a job, or queue it behind the paused one."""
        if self.state is HostState.CLOSED:
            return
        if self._job is not None or self._backlog:
            if len(self._backlog) >= self._backlog_limit:
                self.dropped += 1  # QUIC retransmits what matters
                return
            self._backlog.append(step)
            return
        self._start(step, now)

    def _start(self, step: Step, now: float) -> bool:
        """Start a job for ``step``; True if it ran to the end."""
        job = POOL.acquire(self)
        if job is None:
            self._backlog.appendleft(step)
            self.state = HostState.NO_JOB
            return False
        self.state = HostState.IDLE
        try:
            _RUNNER.start(job, step, now, self._inline())
        finally:
            if job.finished:
                POOL.release()
        if job.finished:
            return True
        self._job = job
        self.state = HostState.PAUSED
        return False

    def resume(self, now: float) -> Resumed:
        """Resume a job the engine finished; then run queued work."""
        if self.state is HostState.CLOSED:
            return Resumed.DONE
        job = self._job
        if job is not None:
            if not job.ready:
                return Resumed.DONE
            if not _RUNNER.can_resume(job):
                assert job.home is not None
                if job.home.is_alive():
                    return Resumed.ELSEWHERE
                return self._lose(job)
            job.ready = False
            self.wait_ctx.reset_counts()
            try:
                _RUNNER.resume(job)
            finally:
                if job.finished:
                    self._job = None
                    self.state = HostState.IDLE
                    POOL.release()
            if not job.finished:
                return Resumed.DONE  # paused again
        while self._job is None and self._backlog:
            step = self._backlog.popleft()
            if self.signed:
                step(now)  # nothing left to sign: no job needed
            elif not self._start(step, now):
                break
        return Resumed.DONE

    def _lose(self, job: AsyncJob) -> Resumed:
        """The job's thread is gone: its greenlet can never run again."""
        self._job = None
        self._backlog.clear()
        self.state = HostState.IDLE
        job.finished = True
        POOL.release()
        self.failure = "the thread that started the paused async job has exited"
        return Resumed.LOST

    def close(self) -> None:
        """Abandon paused work and release the wait fds (SSL_free)."""
        with self._lock:
            if self.state is HostState.CLOSED:
                return
            self.state = HostState.CLOSED
            job, self._job = self._job, None
        self._backlog.clear()
        POOL.forget(self)
        if job is not None:
            _RUNNER.kill(job)
            POOL.release()
        self.wait_ctx.close()

    def notify_ready(self) -> None:
        if self.state is not HostState.CLOSED:
            self._notify()

    # -- inside a job (runner thread) ---------------------------------------

    def sign(self, job: AsyncJob, key: Any, data: bytes, scheme: int) -> bytes:
        """Have the engine sign, pausing the job until it has."""
        engine = self.engine
        fd = self.wait_ctx.fd_for(engine)

        def done(request: SignRequest) -> None:
            self._on_done(job, request, fd)

        while True:
            request = SignRequest(key, data, scheme, done=done)
            job.ready = False
            try:
                status = engine.submit(request)
            except Exception as exc:
                logger.exception("the async engine's submit() failed")
                status = ASYNC_STATUS_ERR
                request.fail(exc)
            if status not in (ASYNC_STATUS_OK, ASYNC_STATUS_EAGAIN):
                self.wait_ctx.status = ASYNC_STATUS_ERR
                reason = f": {request.error}" if request.error else ""
                self.failure = (
                    f"the async engine refused the private-key operation{reason}"
                )
                raise AsyncSignError(self.failure)
            if status == ASYNC_STATUS_EAGAIN:
                # Not submitted: ask the application to retry at once, as
                # OpenSSL does (status EAGAIN, then the callback).
                self.wait_ctx.status = ASYNC_STATUS_EAGAIN
                with self._lock:
                    job.ready = True
                    fd.signal()
                self._wake()
            elif request.error is None:
                self.wait_ctx.status = ASYNC_STATUS_OK
            job.pause()
            fd.clear()
            if status == ASYNC_STATUS_EAGAIN:
                continue
            if request.error is not None:
                self.failure = (
                    f"the async engine failed the private-key operation: "
                    f"{request.error}"
                )
                raise AsyncSignError(self.failure)
            assert request.signature is not None
            self.signed = True
            return request.signature

    def _on_done(self, job: AsyncJob, request: SignRequest, fd: WaitFd) -> None:
        """The engine's completion (engine thread, or inside submit())."""
        with self._lock:
            if self.state is HostState.CLOSED or job.finished:
                return
            if request.error is not None:
                self.wait_ctx.status = ASYNC_STATUS_ERR
            job.ready = True
            fd.signal()  # under the lock: close() cannot close it meanwhile
        self._wake()

    def _wake(self) -> None:
        """Ask for a resumption, then tell the application (its callback)."""
        if self.state is HostState.CLOSED:
            return
        self._notify()
        try:
            self._wake_app()
        except Exception:
            logger.exception("the async callback raised")


def offload_sign(key: Any, data: bytes, scheme: int) -> bytes:
    """Sign through the current job's engine, or right here outside a job.

    Called by the private-key wrapper the core hands to the TLS stack.  As
    with an OpenSSL async engine, an operation started outside a job runs
    synchronously.
    """
    job = current_job()
    if job is None:
        return sign_with_scheme(key, data, scheme)
    return job.host.sign(job, key, data, scheme)


__all__ = [
    "BACKLOG_LIMIT",
    "POOL",
    "AsyncJob",
    "AsyncSignError",
    "HostState",
    "JobHost",
    "JobPool",
    "Resumed",
    "WaitCtx",
    "WaitFd",
    "async_cleanup_thread",
    "async_init_thread",
    "current_job",
    "offload_sign",
]
