"""The one blocking waiter: where threads blocked on one transport meet.

Every transport has one driver above it (a QUIC :class:`~quicconn._quic.reactor.
Reactor`, a DTLS router), and every driver has one :class:`Waiter`.  The
waiter owns what blocking calls from several threads need to share the
transport's descriptor safely and cheaply:

* **the lock** every public call of an object on the transport runs under;
* **leader/follower waiting**: one thread (the *leader*) sleeps in
  ``poll(2)`` on the transport and on the waiter's :class:`Waker`, with the
  lock released; the others (*followers*) wait on a condition.  Whoever makes
  progress calls :meth:`Waiter.notify`: the followers wake, and the leader's
  ``poll`` is cut short through the waker (not the leader's own progress:
  no thread wakes itself);
* **wake-ups from other threads**: :meth:`Waiter.post` for threads that do
  not hold the lock (an async engine completing a job), watcher wakers for
  threads sleeping in ``quicconn.poll()`` on the transport;
* **the one close path**: :meth:`Waiter.close` closes the descriptors at once
  when no thread sleeps in ``poll`` on them; otherwise it wakes that thread
  and hands the descriptors over, and the thread closes them when it wakes
  (closing a descriptor under a ``poll`` does not wake it, and a descriptor
  number closed too early can be reused by an unrelated file).

No busy waiting and no fixed sleeps: a thread sleeps until a datagram, a
timer deadline it was given, or another thread's progress.  A wait that made
no progress wakes nobody, so two waiting threads cannot take turns waking
each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .transport import DatagramTransport, Waker

__all__ = ["Waiter"]


class Waiter:
    """Leader/follower waiting, wake-ups and closing for one transport."""

    def __init__(self, transport: DatagramTransport) -> None:
        self.transport = transport
        self.clock = transport.clock
        #: The lock of every call on the transport's objects.  Released only
        #: while a thread sleeps in :meth:`block_until`.
        self.lock = threading.Lock()
        self._cond = threading.Condition(self.lock)
        self._waker = Waker()
        #: Wakers of threads blocked in ``quicconn.poll()`` on the transport.
        self._watchers: set[Waker] = set()
        self._leader: int | None = None
        self._followers = 0
        #: Guards the leader slot, ``closed`` and the waker's lifetime against
        #: :meth:`close` and :meth:`post`, which may run without :attr:`lock`.
        self._guard = threading.Lock()
        #: Set by :meth:`close` while a leader polls: whether the leader must
        #: close the transport too when it wakes (it always closes the waker).
        self._handover: bool | None = None
        #: True once :meth:`close` ran; waits end, nothing is woken any more.
        self.closed = False

    # -- waiting (lock held) ------------------------------------------------

    def block_until(
        self,
        ready: Callable[[], bool],
        next_wakeup: Callable[[], float | None],
        deadline: float | None = None,
    ) -> bool:
        """Call ``ready()`` until it returns True, sleeping in between.

        Called with :attr:`lock` held exactly once; the lock is released only
        while sleeping.  ``ready()`` does the caller's work (tick, try the
        operation) and says whether it is done.  Between two calls the thread
        sleeps until the transport is readable (or writable, while datagrams
        wait behind ``EAGAIN``), until ``next_wakeup()`` (an instant on the
        transport's clock, or None for none), or until another thread makes
        progress.  Returns False at ``deadline`` or once :meth:`close` ran.
        """
        try:
            while True:
                if ready():
                    return True
                now = self.clock.now()
                if deadline is not None and now >= deadline:
                    return False
                if self.closed:
                    return False
                self._sleep(_timeout(now, next_wakeup(), deadline))
        finally:
            if self._followers and self._leader is None:
                # Pass the baton: nobody polls the transport now, so a
                # follower must take over (or, once closed, all must leave).
                if self.closed:
                    self._cond.notify_all()
                else:
                    self._cond.notify()

    def _sleep(self, timeout: float | None) -> None:
        """Sleep once, as the leader or as a follower (lock held)."""
        if self._leader is not None:
            self._followers += 1
            try:
                self._cond.wait(timeout)
            finally:
                self._followers -= 1
            return
        with self._guard:
            if self.closed:
                return
            self._leader = threading.get_ident()
        transport = self.transport
        want_write = transport.has_pending_writes()
        self.lock.release()
        try:
            transport.wait(True, want_write, timeout, self._waker.fileno())
        finally:
            self.lock.acquire()
            with self._guard:
                self._leader = None
                handover = self._handover
                if handover is None:
                    # Under the guard: a close() from now on closes the
                    # waker at once, so it must not be read after that.
                    self._waker.clear()
            if handover is not None:
                self._release(handover)

    def notify(self) -> None:
        """Progress was made (lock held): wake every other waiting thread.

        Call it only for real progress (datagrams delivered, a timer fired, a
        call changed state), never for an idle pass, or waiting threads would
        take turns waking each other.
        """
        if self._followers:
            self._cond.notify_all()
        leader = self._leader
        if leader is not None and leader != threading.get_ident():
            self._waker.wake()
        for watcher in self._watchers:
            watcher.wake()

    # -- wake-ups from other threads --------------------------------------

    def post(self) -> None:
        """Wake the leader so it returns to its caller's work.  Any thread.

        For work handed in from outside the lock (an async engine's
        completion): the poster records the work first, then posts.  With no
        leader, the waker stays readable and the next leader's ``poll``
        returns at once, so the post is not lost.
        """
        with self._guard:
            if not self.closed:
                self._waker.wake()

    def add_watcher(self, waker: Waker) -> None:
        """Wake ``waker`` on every :meth:`notify` (a poll() elsewhere).  Lock held."""
        self._watchers.add(waker)

    def remove_watcher(self, waker: Waker) -> None:
        """Stop waking ``waker``.  Lock held."""
        self._watchers.discard(waker)

    # -- closing ------------------------------------------------------------

    def close(self, close_transport: bool) -> None:
        """End every wait for good and release the descriptors.  Any thread.

        The lock may be held or not.  With no thread sleeping in ``poll`` on
        the descriptors, the waker (and the transport, if
        ``close_transport``) are closed now.  Otherwise the sleeping thread is
        woken and closes them itself once it is out of ``poll``.  Waiting
        threads return False from :meth:`block_until`.
        """
        with self._guard:
            if self.closed:
                return
            self.closed = True
            leader = self._leader
            if leader is not None and leader != threading.get_ident():
                self._handover = close_transport
                self._waker.wake()
            else:
                leader = None
        for watcher in list(self._watchers):
            watcher.wake()  # a poll() on this transport looks again
        if leader is None:
            self._release(close_transport)

    def _release(self, close_transport: bool) -> None:
        self._handover = None
        self._waker.close()
        if close_transport:
            self.transport.close()


def _timeout(now: float, wakeup: float | None, deadline: float | None) -> float | None:
    """Seconds from ``now`` to the earlier of two instants; None if neither."""
    if wakeup is None:
        if deadline is None:
            return None
        return max(0.0, deadline - now)
    if deadline is not None and deadline < wakeup:
        wakeup = deadline
    return max(0.0, wakeup - now)
