"""A UDP relay on real loopback sockets that can drop large datagrams.

``with Relay(server_address) as relay:`` listens on ``relay.address``; the
first datagram that arrives there names the client, and from then on every
datagram is passed on, client to server through a socket of the relay's
own and back.  Unlike an impairment rule inside quicconn, the datagrams
cross real sockets: what the relay sees is what the kernel carried.

* ``relay.limit`` (None: no limit) drops every datagram larger than that
  many bytes, in both directions, as a path with a smaller MTU would
  (silently: no ICMP, a black hole for that size).  It may change at any
  time.
* ``relay.largest`` is the largest datagram passed on per direction
  (``"up"``: client to server, ``"down"``), ``relay.dropped`` how many
  were dropped, ``relay.sizes`` every size passed on (a Counter).
"""

from __future__ import annotations

import collections
import select
import socket
import threading
from types import TracebackType

Address = tuple[str, int]

#: Kernel buffers large enough that a burst is never dropped here.
_BUFFER = 4 * 1024 * 1024


def _udp_socket(bind: Address) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
    sock.bind(bind)
    sock.setblocking(False)
    return sock


class Relay:
    def __init__(self, server: Address, *, limit: int | None = None) -> None:
        self.server = server
        self.limit = limit
        self._front = _udp_socket(("127.0.0.1", 0))
        self._back = _udp_socket(("127.0.0.1", 0))
        self.address: Address = self._front.getsockname()
        self.client: Address | None = None
        self.largest = {"up": 0, "down": 0}
        self.dropped = {"up": 0, "down": 0}
        self.sizes: dict[str, collections.Counter[int]] = {
            "up": collections.Counter(),
            "down": collections.Counter(),
        }
        self._lock = threading.Lock()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop_w.send(b"x")
            self._thread.join(10)
        for sock in (self._front, self._back, self._stop_r, self._stop_w):
            sock.close()

    def _pass(self, direction: str, data: bytes) -> bool:
        size = len(data)
        with self._lock:
            limit = self.limit
            if limit is not None and size > limit:
                self.dropped[direction] += 1
                return False
            self.sizes[direction][size] += 1
            if size > self.largest[direction]:
                self.largest[direction] = size
        return True

    def _run(self) -> None:
        poller = select.poll()
        for sock in (self._front, self._back, self._stop_r):
            poller.register(sock, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == self._stop_r.fileno():
                    return
                if fd == self._front.fileno():
                    self._drain(self._front, "up")
                else:
                    self._drain(self._back, "down")

    def _drain(self, sock: socket.socket, direction: str) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue
            if direction == "up":
                self.client = addr
                target, out = self.server, self._back
            else:
                if self.client is None:
                    continue
                target, out = self.client, self._front
            if self._pass(direction, data):
                try:
                    out.sendto(data, target)
                except OSError:
                    pass  # a full buffer: a loss, as on any path


__all__ = ["Relay"]
