"""``LoopDriver``: one reactor driven by an event loop, whatever the loop.

OpenSSL's answer for programs with an event loop is the application-driven
event model: watch the poll descriptor, arm a timer from
``SSL_get_event_timeout()``, call ``SSL_handle_events()`` when either fires,
and retry what could not finish.  Done per call (an ``add_reader`` for every
wait, as a first asyncio example did) it stalls as soon as several tasks
share a connection: one loop watches a descriptor for one callback only, and
every task re-registers it.  The driver does it once per reactor (socket):

* the descriptor is watched for the reactor's whole life, write interest
  only while ``net_write_desired()``;
* one timer, re-armed from the reactor's deadline after every tick and
  every call that may have moved it;
* the reactor tells the driver which connections each flush moved on
  (:class:`~quicconn._quic.reactor.ReactorObserver`), and the driver wakes
  the tasks waiting on those connections only;
* a task's operation is an *attempt* on a nonblocking object in explicit
  event-handling mode (no call ticks on its own: the driver does): it
  finishes, raises ``Want*``, or fails; on ``Want*`` the task waits for its
  connection to move, then tries again.  Nothing is taken from a buffer
  before the attempt succeeds, so cancelling a waiting task loses nothing.

This module is loop-neutral; ``quicconn.asyncio`` and ``quicconn.trio``
supply the descriptor watch, the timer, and what a waiting task waits on.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

from .._core.interface import Core
from .._quic.assist import assist_of
from .._quic.reactor import Reactor

Wakeup = Callable[[], None]

#: Timers are armed on a whole millisecond, rounded up, as poll(2) rounds a
#: blocking wait: a loop whose timers are millisecond-grained (uvloop's)
#: would otherwise fire a sub-millisecond timer at once and spin until due.
TIMER_GRAIN = 0.001


class LoopDriver:
    """Drives one reactor from an event loop's callbacks; see the module
    docstring.  Subclasses connect it to a loop: :meth:`_request_dispatch`
    (call :meth:`dispatch` soon), :meth:`_rearm` (timer and write
    interest), :meth:`_unwatch` (stop watching the descriptor)."""

    def __init__(self, reactor: Reactor) -> None:
        if reactor.observer is not None:
            raise ValueError(
                "this socket is already driven by another event loop "
                "(one driver per socket)"
            )
        if assist_of(reactor) is not None:
            raise ValueError(
                "this socket is thread-assisted (CLIENT_THREAD or a "
                "THREAD_ASSISTED domain): its assist thread drives it; use a "
                "context with DOMAIN_FLAG_MULTI_THREAD for an event loop"
            )
        self.reactor = reactor
        self.fileno = reactor.transport.fileno()
        #: One-shot wake-ups of tasks waiting on a connection (by its key).
        self._waiting: dict[object, list[Wakeup]] = {}
        #: Persistent callbacks run whenever a connection moved on.
        self._watchers: dict[object, list[Wakeup]] = {}
        #: Conditions tested after every dispatch (a listener's queue).
        self._conditions: dict[object, Callable[[], bool]] = {}
        self._moved: set[object] = set()
        self._dispatch_pending = False
        self.closed = False
        reactor.observer = self

    # -- ReactorObserver (lock held) ------------------------------------------

    def on_progress(self, cores: list[Core]) -> None:
        self._moved.update(cores)
        self._request()

    def on_close(self) -> None:
        self.closed = True
        self._unwatch()
        self._request()

    def _request(self) -> None:
        if not self._dispatch_pending:
            self._dispatch_pending = True
            self._request_dispatch()

    # -- what the loop calls ----------------------------------------------------

    def handle_events(self) -> None:
        """The descriptor is ready or the timer fired: tick, then dispatch."""
        reactor = self.reactor
        with reactor.lock:
            if not reactor.closed:
                reactor.tick()
        self.dispatch()

    def touch(self) -> None:
        """A task's call changed something (a read granted credit, a write
        queued data): dispatch soon, which ticks if the reactor asks to."""
        self._request()

    def dispatch(self) -> None:
        """Wake the tasks whose connections moved; re-arm the timer."""
        self._dispatch_pending = False
        reactor = self.reactor
        timeout: float | None = None
        want_write = False
        if not self.closed:
            with reactor.lock:
                if not reactor.closed:
                    if reactor.timeout() == 0.0:
                        # Credit to grant or output held back: due now.
                        reactor.tick()
                    timeout = reactor.timeout()
                    want_write = reactor.net_write_desired()
        self._dispatch_pending = False
        if self.closed:
            self._moved.clear()
            self._wake_all()
            return
        moved, self._moved = self._moved, set()
        if moved:
            self._wake(moved)
        for key, condition in list(self._conditions.items()):
            if condition():
                self._wake_key(key)
        self._rearm(timeout, want_write)

    def _wake(self, keys: set[object]) -> None:
        waiting = self._waiting
        watchers = self._watchers
        for key in keys:
            callbacks = watchers.get(key)
            if callbacks:
                for callback in list(callbacks):
                    callback()
            if key in waiting:
                self._wake_key(key)

    def _wake_key(self, key: object) -> None:
        wakeups = self._waiting.pop(key, None)
        if wakeups:
            for wakeup in wakeups:
                wakeup()

    def _wake_all(self) -> None:
        for callbacks in list(self._watchers.values()):
            for callback in list(callbacks):
                callback()
        waiting, self._waiting = self._waiting, {}
        for wakeups in waiting.values():
            for wakeup in wakeups:
                wakeup()

    # -- what tasks call ----------------------------------------------------------

    def add_wakeup(self, key: object, wakeup: Wakeup) -> None:
        """Call ``wakeup`` once, when the connection ``key`` next moves on
        (or the reactor closes)."""
        if self.closed:
            wakeup()
            return
        self._waiting.setdefault(key, []).append(wakeup)

    def remove_wakeup(self, key: object, wakeup: Wakeup) -> None:
        """Forget a wake-up that was not called (its task was cancelled)."""
        wakeups = self._waiting.get(key)
        if wakeups is not None:
            with contextlib.suppress(ValueError):
                wakeups.remove(wakeup)
            if not wakeups:
                del self._waiting[key]

    def wake(self, key: object) -> None:
        """Wake the tasks waiting on ``key`` now (it was closed, say)."""
        self._wake_key(key)

    def watch(self, key: object, callback: Wakeup) -> None:
        """Call ``callback`` every time the connection ``key`` moves on."""
        self._watchers.setdefault(key, []).append(callback)

    def unwatch(self, key: object, callback: Wakeup) -> None:
        callbacks = self._watchers.get(key)
        if callbacks is not None and callback in callbacks:
            callbacks.remove(callback)
            if not callbacks:
                del self._watchers[key]

    def add_condition(self, key: object, condition: Callable[[], bool]) -> None:
        """Wake ``key``'s waiters after any dispatch where ``condition()``."""
        self._conditions[key] = condition

    def remove_condition(self, key: object) -> None:
        self._conditions.pop(key, None)

    async def wait(self, key: object, timeout: float | None = None) -> bool:
        """Wait until the connection ``key`` moves on, or the reactor closes
        (True), or ``timeout`` seconds passed (False).  ``key`` may also be
        any object that :meth:`wake` is called with."""
        raise NotImplementedError

    # -- the loop's side (subclasses) ------------------------------------------

    def _request_dispatch(self) -> None:
        """Ask the loop to call :meth:`dispatch` soon (from the loop thread)."""
        raise NotImplementedError

    def _rearm(self, timeout: float | None, want_write: bool) -> None:
        """Arm the one timer ``timeout`` seconds from now (None: disarm) and
        watch for writability exactly while ``want_write``."""
        raise NotImplementedError

    def _unwatch(self) -> None:
        """Stop watching the descriptor and the timer (it is being closed)."""
        raise NotImplementedError


def timer_delay(timeout: float) -> float:
    """``timeout`` rounded up to the timer grain (see :data:`TIMER_GRAIN`)."""
    return math.ceil(timeout / TIMER_GRAIN - 1e-9) * TIMER_GRAIN


__all__ = ["TIMER_GRAIN", "LoopDriver", "Wakeup", "timer_delay"]
