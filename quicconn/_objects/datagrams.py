"""A connection's DATAGRAM frames (RFC 9221): a quicconn extension.

OpenSSL 3.5 has no DATAGRAM support; these calls follow its conventions
all the same: they run under the call discipline (``recv_datagram`` blocks
in blocking mode and raises ``WantReadError`` in nonblocking mode), the
handshake runs first as for stream I/O, and readiness is a poll event,
``POLL_EVENT_DGRAM``.

Semantics (docs/datagrams.md): a datagram is sent at most once, never
retransmitted, and may be lost, duplicated by nothing but the application,
or reordered; one that does not fit (the peer's max_datagram_frame_size,
or one packet) is refused with ``ValueError`` before anything is sent.
Received datagrams wait in a bounded queue (1024); when it is full the
oldest is dropped.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .._quic.conditions import Condition
from .binding import Binding
from .call import api

if TYPE_CHECKING:
    from .._types import Buffer


class DatagramSurface:
    """Mixin: a connection's DATAGRAM frames."""

    _binding: Binding
    _last_error: int

    def _call_lock(self) -> AbstractContextManager[object]:
        raise NotImplementedError

    @api
    def send_datagram(self, data: Buffer) -> int:
        """Send ``data`` in one DATAGRAM frame; return its length.

        Needs DATAGRAM frames on both ends
        (``Context.set_max_datagram_frame_size``).  Never blocks for the
        network: the frame is queued and goes out with the next packet (now,
        unless congestion control holds it); it is never retransmitted.
        Raises ``ValueError`` if it is larger than
        :meth:`get_max_datagram_size` (nothing is sent).
        """
        payload = bytes(memoryview(data).cast("B"))
        binding = self._binding
        binding.ready_for_stream_io()
        binding.channel.send_datagram(payload)
        return len(payload)

    @api
    def recv_datagram(self) -> bytes:
        """The oldest received DATAGRAM frame's payload.

        Blocking mode waits for one; nonblocking mode raises
        ``WantReadError`` when none is queued (after one tick).  Raises
        ``ConnectionTerminatedError`` once the connection is closed and no
        datagram is left.
        """
        binding = self._binding
        binding.ready_for_stream_io()
        data: bytes = binding.run(binding.channel.take_datagram, Condition.WANT_READ)
        return data

    def get_max_datagram_size(self) -> int:
        """The largest payload :meth:`send_datagram` accepts now; 0 before
        the handshake, or when the peer does not accept DATAGRAM frames."""
        with self._call_lock():
            return self._binding.channel.max_datagram_payload()

    def get_datagram_queue_len(self) -> int:
        """Received datagrams waiting for :meth:`recv_datagram`."""
        return len(self._binding.channel.datagrams)


__all__ = ["DatagramSurface"]
