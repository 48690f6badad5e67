"""The one blocking waiter (quicconn/_io/waiter.py), under its drivers.

Threads block in ``Waiter.block_until`` on a UDP socket: one polls, the
others wait on a condition.  These tests pin what the QUIC reactor and the
DTLS router both rely on: closing while threads wait ends every wait and
closes each descriptor exactly once, by the thread that may; a wake-up posted
from another thread reaches the poller; datagrams wake it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from quicconn._io.transport import UdpTransport
from quicconn._io.waiter import Waiter


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def never() -> None:
    return None


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


class Blocked:
    """``count`` threads in ``waiter.block_until(ready, never)``."""

    def __init__(self, waiter: Waiter, ready: Callable[[], bool], count: int) -> None:
        self.results: list[object] = []
        self.threads = [
            threading.Thread(target=self._run, args=(waiter, ready), daemon=True)
            for _ in range(count)
        ]
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)  # all asleep: one in poll(2), the others on the condition
        assert all(t.is_alive() for t in self.threads), self.results

    def _run(self, waiter: Waiter, ready: Callable[[], bool]) -> None:
        try:
            with waiter.lock:
                self.results.append(waiter.block_until(ready, never))
        except BaseException as exc:  # pragma: no cover - reported by the test
            self.results.append(exc)

    def join(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(t.is_alive() for t in self.threads)
        assert not stuck, f"{stuck} thread(s) still waiting"


def test_closing_while_a_thread_polls_hands_the_descriptors_to_that_thread() -> None:
    before = open_descriptors()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    waiter = Waiter(UdpTransport(sock))
    blocked = Blocked(waiter, lambda: False, 1)
    waiter.close(close_transport=True)  # not holding the lock, like free()
    blocked.join()
    assert blocked.results == [False]
    assert sock.fileno() == -1  # closed by the polling thread, once
    assert open_descriptors() == before


def test_closing_ends_the_wait_of_every_follower(udp: socket.socket) -> None:
    """Leader and followers all return, whichever thread is woken first."""
    before = open_descriptors()
    waiter = Waiter(UdpTransport(udp))
    blocked = Blocked(waiter, lambda: False, 4)
    waiter.close(close_transport=False)
    blocked.join()
    assert blocked.results == [False] * 4
    assert udp.fileno() != -1  # not the waiter's to close
    assert open_descriptors() == before  # the waker closed, the socket not


def test_closing_with_nobody_polling_closes_the_descriptors_at_once() -> None:
    before = open_descriptors()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    waiter = Waiter(UdpTransport(sock))
    with waiter.lock:
        waiter.close(close_transport=True)  # the lock held, like free_locked()
        assert waiter.block_until(lambda: False, never) is False
    assert open_descriptors() == before
    waiter.post()  # too late: a no-op, not a write to a closed descriptor


def test_a_post_from_another_thread_wakes_the_polling_thread(
    udp: socket.socket,
) -> None:
    waiter = Waiter(UdpTransport(udp))
    done = threading.Event()
    blocked = Blocked(waiter, done.is_set, 1)
    done.set()
    waiter.post()
    blocked.join(2)
    assert blocked.results == [True]
    waiter.close(close_transport=False)


def test_a_datagram_wakes_the_polling_thread_and_progress_wakes_the_followers(
    udp: socket.socket,
) -> None:
    transport = UdpTransport(udp)
    waiter = Waiter(transport)
    arrived: list[bytes] = []

    def ready() -> bool:
        batch = transport.recv_batch()
        if batch:
            arrived.extend(data for data, _ in batch)
            waiter.notify()  # progress: the others look again
        return bool(arrived)

    blocked = Blocked(waiter, ready, 3)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.sendto(b"x", udp.getsockname())
        blocked.join(2)
    assert blocked.results == [True] * 3
    assert arrived == [b"x"]
    waiter.close(close_transport=False)
