"""Datagram transports: the bottom layer, where bytes meet the kernel.

A transport moves whole datagrams and knows nothing of QUIC.  The reactor
above drives it in batches: :meth:`DatagramTransport.recv_batch` drains every
datagram that is ready (until ``EAGAIN``), the reactor feeds the whole batch to
the protocol core, then hands everything the core wants to send to one
:meth:`DatagramTransport.send_batch` call.  That shape is where the speed
comes from: one wake-up and one send pass per burst instead of per packet.

On Linux, :class:`UdpTransport` also lets the kernel batch (docs/performance.md,
"The driver"): a run of equal-sized datagrams to one address leaves in one
``sendmsg`` with a ``UDP_SEGMENT`` control message (generic segmentation
offload, GSO), and with ``UDP_GRO`` on the socket the kernel hands up such a
run, coalesced, in one ``recvmsg`` whose control message names the segment
size (generic receive offload, GRO); the transport cuts it back into
datagrams.  Both are detected per socket and fall back to one system call
per datagram where the kernel or the socket family lacks them.  A QUIC
socket also gets the Don't Fragment bit (``dont_fragment``,
``IP_PMTUDISC_PROBE``): QUIC's datagrams must never be fragmented (RFC 9000,
section 14), and a path MTU probe that the kernel fragmented would prove
nothing.  (DTLS keeps the kernel's default: OpenSSL behind memory BIOs
cannot learn of a datagram too large to send.)

:class:`UdpTransport` is the real thing (``SSL_set_fd``); the in-memory pair
used by deterministic tests lives in :mod:`quicconn.testing` and implements
the same protocol.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import sys
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from .clock import MONOTONIC, Clock

logger = logging.getLogger("quicconn.transport")

Address = tuple[str, int] | tuple[str, int, int, int]
Datagram = tuple[bytes, Address]
#: A run of datagrams from one address as one receive handed it up: the
#: bytes, the segment size (every datagram but the last is that long; a
#: lone datagram's is its length), the address.
DatagramRun = tuple[bytes, int, Address]

#: Linux socket option numbers for UDP segmentation offload (linux/udp.h).
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: Linux: set the Don't Fragment bit and ignore the kernel's path MTU cache
#: (linux/in.h, linux/in6.h); QUIC discovers the path MTU itself.
_IP_MTU_DISCOVER = 10
_IPV6_MTU_DISCOVER = 23
_PMTUDISC_PROBE = 3
#: Room for the UDP_GRO control message (an int: the segment size).
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
#: The kernel accepts at most this many segments in one GSO send.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
#: Upper bound on datagrams drained per tick, so a flood cannot starve sending.
RECV_BATCH_LIMIT = 1024
RECV_BUFFER_SIZE = 65535
#: Kernel socket buffer size requested for sockets quicconn creates itself:
#: the default (about 210 kB) holds only ~90 full datagrams, so a burst that
#: arrives while a batch is being processed would be dropped.
SOCKET_BUFFER_SIZE = 4 * 1024 * 1024

#: errno values after which a socket is unusable.
_FATAL_ERRNOS = frozenset({errno.EBADF, errno.ENOTSOCK, errno.EINVAL, errno.EFAULT})


class DatagramTransport(Protocol):
    """What the reactor needs from a datagram carrier."""

    clock: Clock
    fatal_error: OSError | None

    def fileno(self) -> int:
        """A descriptor that polls readable when datagrams may be waiting."""
        ...

    def local_address(self) -> Address:
        """The address datagrams are received on."""
        ...

    def connected_peer(self) -> Address | None:
        """The peer of a connected socket, or None."""
        ...

    def recv_batch(self) -> list[Datagram]:
        """Return every datagram that is ready now (possibly none)."""
        ...

    def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        """Send datagrams in order; keep what the kernel refuses for later."""
        ...

    def flush(self) -> None:
        """Retry datagrams kept back by an earlier ``EAGAIN``."""
        ...

    def has_pending_writes(self) -> bool:
        """True while datagrams are queued behind ``EAGAIN``."""
        ...

    def wait(
        self,
        want_read: bool,
        want_write: bool,
        timeout: float | None,
        interrupt_fd: int | None = None,
    ) -> None:
        """Block until readable/writable, ``interrupt_fd`` fires, or timeout."""
        ...

    def close(self) -> None:
        """Release the transport's resources."""
        ...


def resolve_address(family: int, address: tuple[object, ...]) -> Address:
    """Turn ``(host, port)`` into the numeric form ``recvfrom`` reports.

    The protocol core compares addresses to recognise its peer; if the
    address a connection was started with differs in form from what the
    kernel later reports (a hostname, a 2-tuple on an IPv6 socket, an
    unmapped IPv4 address on a dual-stack socket), the core would take every
    packet for a migration.  Normalising once, here, prevents that.
    """
    if len(address) < 2:
        raise ValueError(f"an address is (host, port), got {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str) or not isinstance(port, int):
        raise TypeError(f"an address is (host: str, port: int), got {address!r}")
    flags = socket.AI_V4MAPPED if family == socket.AF_INET6 else 0
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0, flags)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc.strerror}") from exc
    sockaddr = infos[0][4]
    if family == socket.AF_INET6:
        scope_id = int(sockaddr[3]) if len(sockaddr) > 3 else 0
        return (str(sockaddr[0]), int(sockaddr[1]), 0, scope_id)
    return (str(sockaddr[0]), int(sockaddr[1]))


def enlarge_socket_buffers(sock: socket.socket, size: int = SOCKET_BUFFER_SIZE) -> None:
    """Ask for larger kernel buffers (best effort; capped by net.core.*mem_max)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            if sock.getsockopt(socket.SOL_SOCKET, option) < size:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError as exc:
            logger.debug("cannot set socket buffer option %d: %s", option, exc)


def _gso_supported(sock: socket.socket) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    """Ask the kernel for coalesced receives (UDP_GRO); True if it agreed."""
    if not sys.platform.startswith("linux") or not _GRO_CMSG_SPACE:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return bool(sock.getsockopt(SOL_UDP, UDP_GRO))
    except OSError:
        return False


def _gro_segment_size(ancdata: list[tuple[int, int, bytes]]) -> int:
    """The segment size a UDP_GRO control message names (0: none)."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            size: int = struct.unpack_from("=i", data)[0]
            return size
    return 0


def set_dont_fragment(sock: socket.socket) -> bool:
    """Set the Don't Fragment bit on everything ``sock`` sends (Linux).

    ``IP_PMTUDISC_PROBE``: the bit is set, and the kernel's own path MTU
    cache (fed by ICMP) is ignored, so only datagrams larger than the
    interface's MTU fail at once (``EMSGSIZE``, a loss for QUIC); path MTU
    discovery is QUIC's (RFC 9000 section 14.3).  Best effort: False where
    the platform has no such option.
    """
    if not sys.platform.startswith("linux"):
        return False
    options = [(socket.IPPROTO_IP, _IP_MTU_DISCOVER)]
    if sock.family == socket.AF_INET6:
        # A dual-stack socket sends IPv4 too: set both.
        options.insert(0, (socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER))
    done = False
    for level, option in options:
        try:
            sock.setsockopt(level, option, _PMTUDISC_PROBE)
            done = True
        except OSError:
            pass
    return done


class _Poller:
    """A ``poll(2)`` set over one descriptor plus an optional interrupt fd."""

    __slots__ = ("_fd", "_interrupt_fd", "_mask", "_poll")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._poll = select.poll()
        self._mask = select.POLLIN
        self._poll.register(fd, self._mask)
        self._interrupt_fd: int | None = None

    def wait(
        self,
        want_read: bool,
        want_write: bool,
        timeout: float | None,
        interrupt_fd: int | None,
    ) -> None:
        mask = (select.POLLIN if want_read else 0) | (
            select.POLLOUT if want_write else 0
        )
        if mask != self._mask:
            if mask:
                self._poll.register(self._fd, mask)
            else:
                self._poll.unregister(self._fd)
            self._mask = mask
        if interrupt_fd != self._interrupt_fd:
            if self._interrupt_fd is not None:
                self._poll.unregister(self._interrupt_fd)
            if interrupt_fd is not None:
                self._poll.register(interrupt_fd, select.POLLIN)
            self._interrupt_fd = interrupt_fd
        # poll() rounds a fractional millisecond timeout up, so a timer due in
        # 0.3 ms costs one wake-up, not a spin.
        self._poll.poll(None if timeout is None else max(timeout, 0.0) * 1000.0)


class UdpTransport:
    """A UDP socket (``SSL_set_fd``), connected or not.

    The socket is switched to nonblocking mode: QUIC needs it, and blocking
    behaviour is provided by the objects above, which wait in ``poll(2)``.

    Every datagram is sent to the address the core gives with it.  On a
    connected socket Linux honours that address, but the kernel only delivers
    replies from the connected peer, so sending elsewhere (a migration the
    core starts) is logged once as a warning rather than failing silently.

    ``use_gso`` and ``use_gro`` allow segmentation and receive offload
    where the kernel has them (see the module docstring); ``dont_fragment``
    sets the Don't Fragment bit on the socket (QUIC's; DTLS leaves it).
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        use_gso: bool = True,
        use_gro: bool = True,
        dont_fragment: bool = False,
    ) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError(f"QUIC needs a UDP (SOCK_DGRAM) socket, got {sock!r}")
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError("QUIC needs an AF_INET or AF_INET6 socket")
        sock.setblocking(False)
        self.clock: Clock = MONOTONIC
        self.fatal_error: OSError | None = None
        self.socket = sock
        self.family = sock.family
        self._fd = sock.fileno()
        self._pending: deque[Datagram] = deque()
        self._poller = _Poller(self._fd)
        self._gso = use_gso and _gso_supported(sock)
        self._gro = use_gro and _enable_gro(sock)
        if dont_fragment:
            set_dont_fragment(sock)
        self._warned_foreign_address = False
        try:
            peer = sock.getpeername()
        except OSError:
            self._peer: Address | None = None
        else:
            self._peer = resolve_address(self.family, peer)
        self.datagrams_sent = 0
        self.datagrams_received = 0
        self.send_errors = 0
        #: Receive calls that returned more than one datagram (GRO).
        self.coalesced_receives = 0

    # -- identity ---------------------------------------------------------

    def fileno(self) -> int:
        return self._fd

    def local_address(self) -> Address:
        addr = self.socket.getsockname()
        return tuple(addr)

    def connected_peer(self) -> Address | None:
        return self._peer

    @property
    def gso_enabled(self) -> bool:
        """Whether sends are batched with UDP generic segmentation offload."""
        return self._gso

    @property
    def gro_enabled(self) -> bool:
        """Whether the kernel may hand up runs of datagrams coalesced (GRO)."""
        return self._gro

    # -- receive ----------------------------------------------------------

    def recv_batch(self) -> list[Datagram]:
        if self._gro:
            return self._recv_coalesced()
        batch: list[Datagram] = []
        recvfrom = self.socket.recvfrom
        try:
            while len(batch) < RECV_BATCH_LIMIT:
                batch.append(recvfrom(RECV_BUFFER_SIZE))
        except (BlockingIOError, InterruptedError):
            pass
        except ConnectionRefusedError:
            # An ICMP port-unreachable for something we sent earlier.  QUIC
            # ignores it; a dead peer is detected by the idle timeout.
            pass
        except OSError as exc:
            self._fail(exc)
        self.datagrams_received += len(batch)
        return batch

    def _recv_coalesced(self) -> list[Datagram]:
        """:meth:`recv_batch` with UDP_GRO on: each coalesced run cut back
        into its datagrams (all of the segment size but the last, which may
        be shorter)."""
        batch: list[Datagram] = []
        for data, segment, addr in self.recv_runs():
            if segment < len(data):
                batch.extend(
                    (data[i : i + segment], addr) for i in range(0, len(data), segment)
                )
            else:
                batch.append((data, addr))
        return batch

    def recv_runs(self) -> list[DatagramRun]:
        """Every datagram that is ready now, each coalesced receive left
        whole (UDP_GRO off: every run is one datagram).

        For a core that cuts runs itself (qh3's ``receive_gro_buffer``):
        the datagrams are not copied into one ``bytes`` each.
        """
        runs: list[DatagramRun] = []
        if not self._gro:
            return [(data, len(data), addr) for data, addr in self.recv_batch()]
        recvmsg = self.socket.recvmsg
        received = 0
        try:
            while received < RECV_BATCH_LIMIT:
                data, ancdata, _, addr = recvmsg(RECV_BUFFER_SIZE, _GRO_CMSG_SPACE)
                segment = _gro_segment_size(ancdata) if ancdata else 0
                size = len(data)
                if 0 < segment < size:
                    self.coalesced_receives += 1
                    runs.append((data, segment, addr))
                    received += -(-size // segment)
                else:
                    runs.append((data, size, addr))
                    received += 1
        except (BlockingIOError, InterruptedError):
            pass
        except ConnectionRefusedError:
            pass  # see recv_batch
        except OSError as exc:
            self._fail(exc)
        self.datagrams_received += received
        return runs

    # -- send -------------------------------------------------------------

    def send_batch(self, datagrams: Sequence[Datagram]) -> None:
        if not datagrams:
            return
        if self._pending:
            self._pending.extend(datagrams)
            self.flush()
            return
        sent = self._send_some(datagrams)
        if sent < len(datagrams):
            self._pending.extend(datagrams[sent:])

    def flush(self) -> None:
        while self._pending:
            batch = list(self._pending)
            sent = self._send_some(batch)
            for _ in range(sent):
                self._pending.popleft()
            if sent < len(batch):
                return

    def has_pending_writes(self) -> bool:
        return bool(self._pending)

    def _send_some(self, datagrams: Sequence[Datagram]) -> int:
        """Send from the front of ``datagrams``; return how many left."""
        if self.fatal_error is not None:
            return len(datagrams)  # dropped: the failure surfaces on the next call
        if self._peer is not None and not self._warned_foreign_address:
            self._check_destinations(datagrams)
        i = 0
        n = len(datagrams)
        singly = 0  # datagrams before this index go one by one
        while i < n:
            if self._gso and i >= singly:
                group_end, segment = self._gso_group(datagrams, i)
                if group_end - i > 1:
                    outcome = self._send_gso(datagrams, i, group_end, segment)
                    if outcome is None:
                        singly = group_end  # refused: this group one by one
                        continue
                    if not outcome:
                        return i
                    if self.fatal_error is not None:
                        return n
                    i = group_end
                    continue
            data, addr = datagrams[i]
            try:
                self.socket.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return i
            except OSError as exc:
                if not self._send_error(exc):
                    return n
            i += 1
            self.datagrams_sent += 1
        return n

    @staticmethod
    def _gso_group(datagrams: Sequence[Datagram], start: int) -> tuple[int, int]:
        """Find the run after ``start`` that one GSO send can carry.

        All segments but the last must have the first one's size, the last
        may be shorter, and all go to the same address.
        """
        data, addr = datagrams[start]
        segment = len(data)
        total = segment
        end = start + 1
        limit = min(len(datagrams), start + GSO_MAX_SEGMENTS)
        while end < limit:
            next_data, next_addr = datagrams[end]
            size = len(next_data)
            if next_addr != addr or size > segment or total + size > GSO_MAX_BYTES:
                break
            total += size
            end += 1
            if size < segment:
                break
        return end, segment

    def _send_gso(
        self, datagrams: Sequence[Datagram], start: int, end: int, segment: int
    ) -> bool | None:
        """Send ``datagrams[start:end]`` as one GSO super-datagram.

        Returns True when sent, False on ``EAGAIN``, None when the group
        must go one datagram at a time: the kernel or device refused GSO
        (then switched off for this socket), or the segment is larger than
        the interface's MTU (``EMSGSIZE``: a path MTU probe too large for
        the link, which alone is lost then, not the whole group).
        """
        payload = b"".join(d for d, _ in datagrams[start:end])
        ancillary = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", segment))]
        try:
            self.socket.sendmsg([payload], ancillary, 0, datagrams[start][1])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EINVAL, errno.EOPNOTSUPP):
                logger.info("UDP GSO refused (%s); sending datagrams one by one", exc)
                self._gso = False
                return None
            if exc.errno == errno.EMSGSIZE:
                return None
            self._send_error(exc)  # the group is lost; loss recovery resends
            return True
        self.datagrams_sent += end - start
        return True

    def _send_error(self, exc: OSError) -> bool:
        """Account for a failed send; False if the socket is now unusable."""
        if exc.errno in _FATAL_ERRNOS:
            self._fail(exc)
            return False
        # Unreachable networks, refused ports, full interface queues: the
        # datagram is lost, which QUIC's loss recovery is built for.
        self.send_errors += 1
        logger.debug("datagram dropped by the kernel: %s", exc)
        return True

    def _check_destinations(self, datagrams: Sequence[Datagram]) -> None:
        for _, addr in datagrams:
            if addr != self._peer:
                logger.warning(
                    "sending to %r on a socket connected to %r: the kernel will "
                    "drop replies from that address; use an unconnected socket "
                    "for connection migration",
                    addr,
                    self._peer,
                )
                self._warned_foreign_address = True
                return

    def _fail(self, exc: OSError) -> None:
        if self.fatal_error is None:
            logger.error("UDP socket failed: %s", exc)
            self.fatal_error = exc

    # -- waiting ----------------------------------------------------------

    def wait(
        self,
        want_read: bool,
        want_write: bool,
        timeout: float | None,
        interrupt_fd: int | None = None,
    ) -> None:
        self._poller.wait(want_read, want_write, timeout, interrupt_fd)

    def close(self) -> None:
        self._pending.clear()
        self.socket.close()


class Waker:
    """A descriptor another thread can make readable to cut a ``poll`` short."""

    __slots__ = ("_read_fd", "_write_fd")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._read_fd = self._write_fd = fd
        else:  # pragma: no cover - non-Linux
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        return self._read_fd

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write_fd, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._read_fd, 4096)

    def close(self) -> None:
        os.close(self._read_fd)
        if self._write_fd != self._read_fd:
            os.close(self._write_fd)


_TRANSPORT_METHODS = ("recv_batch", "send_batch", "wait", "fileno", "clock")


def require_datagram_transport(obj: object, caller: str) -> DatagramTransport:
    """``obj`` if it implements :class:`DatagramTransport`, else TypeError."""
    for name in _TRANSPORT_METHODS:
        if not hasattr(obj, name):
            raise TypeError(
                f"{caller} takes a bound UDP socket, a (host, port) to bind, or a "
                f"datagram transport; {obj!r} has no {name}()"
            )
    return obj  # type: ignore[return-value]


def open_transport(
    where: object,
    caller: str,
    *,
    use_gso: bool = True,
    use_gro: bool = True,
    dont_fragment: bool = False,
) -> tuple[DatagramTransport, bool]:
    """A transport for a listener, and whether the listener owns its socket.

    ``where`` is a bound UDP socket (left open when the listener goes), a
    ``(host, port)`` to bind (a socket of the listener's own, with enlarged
    buffers), or any datagram transport.  The keywords are
    :class:`UdpTransport`'s.
    """
    options = {
        "use_gso": use_gso,
        "use_gro": use_gro,
        "dont_fragment": dont_fragment,
    }
    if isinstance(where, socket.socket):
        return UdpTransport(where, **options), False
    if isinstance(where, tuple):
        family = socket.AF_INET6 if ":" in str(where[0]) else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        enlarge_socket_buffers(sock)
        try:
            sock.bind(where)
        except OSError:
            sock.close()
            raise
        return UdpTransport(sock, **options), True
    return require_datagram_transport(where, caller), False


__all__ = [
    "GSO_MAX_BYTES",
    "GSO_MAX_SEGMENTS",
    "RECV_BATCH_LIMIT",
    "RECV_BUFFER_SIZE",
    "SOCKET_BUFFER_SIZE",
    "Address",
    "Datagram",
    "DatagramRun",
    "DatagramTransport",
    "UdpTransport",
    "Waker",
    "enlarge_socket_buffers",
    "open_transport",
    "require_datagram_transport",
    "resolve_address",
    "set_dont_fragment",
]
