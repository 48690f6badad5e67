"""HTTP/3 frame boundaries, found before the codec buffers anything.

The HTTP/3 codecs of both cores keep an incomplete HEADERS (or SETTINGS)
frame in memory until all of it has arrived, whatever length it declares,
and the qh3 codec does the same with frames of unknown types; the session
reads streams as data arrives, granting flow-control credit as it goes.
So a peer declaring a 2^40-byte HEADERS frame could make it buffer without
bound.  :class:`FrameScanner` reads the frame headers (RFC 9114 section
7.1: a type and a length, two variable-length integers) of one stream as
the bytes go by and decides on each frame from its header alone:

* frames of unknown types are dropped as they arrive (RFC 9114 sections
  7.2.8 and 9 say to ignore them; the codec never sees them);
* a HEADERS or PUSH_PROMISE frame longer than the field-section limit is
  refused before any of its payload is kept (:attr:`Verdict.TOO_LARGE`);
* on a request stream, a frame that belongs on the control stream (or a
  reserved HTTP/2 type) is H3_FRAME_UNEXPECTED at once, whatever its
  length; a control stream that does not start with SETTINGS is
  H3_MISSING_SETTINGS; on the control stream, DATA, HEADERS and
  PUSH_PROMISE are H3_FRAME_UNEXPECTED,
  and a SETTINGS frame larger than :data:`MAX_SETTINGS_FRAME` is
  H3_EXCESSIVE_LOAD; a GOAWAY, MAX_PUSH_ID or CANCEL_PUSH frame holds one
  variable-length integer, so one longer than 8 bytes is H3_FRAME_ERROR;
* a stream that ends inside a frame the codec never saw (an unknown one,
  or a frame header) is H3_FRAME_ERROR (RFC 9114 section 7.1).

Everything else goes to the codec unchanged.  (A HEADERS frame QPACK
cannot decode yet would still have the codec buffer what follows it on its
stream; the codecs announce SETTINGS_QPACK_BLOCKED_STREAMS 0, so a peer may
not send one: RFC 9204 section 2.1.2.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DATA = 0x0
HEADERS = 0x1
CANCEL_PUSH = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
GOAWAY = 0x7
MAX_PUSH_ID = 0xD
#: HTTP/2 frame types with no HTTP/3 counterpart: receiving one is
#: H3_FRAME_UNEXPECTED (RFC 9114 section 7.2.8).
RESERVED_HTTP2 = frozenset({0x2, 0x6, 0x8, 0x9})
#: Frame types that are only valid on the control stream.
CONTROL_FRAMES = frozenset({CANCEL_PUSH, SETTINGS, GOAWAY, MAX_PUSH_ID})
#: Frame types that are only valid on request (and push) streams.
MESSAGE_FRAMES = frozenset({DATA, HEADERS, PUSH_PROMISE})
KNOWN = CONTROL_FRAMES | MESSAGE_FRAMES | RESERVED_HTTP2

#: The control stream's type (RFC 9114 section 6.2.1).
CONTROL_STREAM = 0x00
#: The largest SETTINGS frame accepted: far above any real one (a few
#: settings of at most 16 bytes each).
MAX_SETTINGS_FRAME = 16 * 1024

H3_FRAME_UNEXPECTED = 0x105
H3_MISSING_SETTINGS = 0x10A
H3_FRAME_ERROR = 0x106
H3_EXCESSIVE_LOAD = 0x107


class Verdict(enum.Enum):
    """Why a scanner stopped passing a stream's bytes on."""

    #: A HEADERS or PUSH_PROMISE frame declares more than the limit: a
    #: stream error (the session answers 431 or gives up the stream).
    TOO_LARGE = "field section too large"
    #: A connection error; :attr:`FrameScanner.error` has the code and why.
    CONNECTION_ERROR = "connection error"


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes for the codec, and whether the stream ends with them."""

    data: bytes
    fin: bool


def _varint_length(first: int) -> int:
    return 1 << (first >> 6)


def _varint(data: bytes | bytearray, start: int) -> int:
    length = _varint_length(data[start])
    value = data[start] & 0x3F
    for byte in data[start + 1 : start + length]:
        value = (value << 8) | byte
    return value


class FrameScanner:
    """Watches one stream's HTTP/3 frames; see the module docstring.

    ``kind`` is ``"request"`` for a bidirectional (request) stream and
    ``"uni"`` for a unidirectional one, whose type decides: the control
    stream is scanned, every other type goes to the codec untouched.
    """

    __slots__ = (
        "_first",
        "_header",
        "_left",
        "_max_headers",
        "_skip",
        "_uni_type",
        "control",
        "error",
        "verdict",
    )

    def __init__(self, kind: str, max_field_section_size: int) -> None:
        self._max_headers = max_field_section_size
        #: A frame header (or a stream type) not yet complete.
        self._header = bytearray()
        self._left = 0
        self._skip = False
        #: No frame seen yet (the control stream must start with SETTINGS).
        self._first = True
        #: The unidirectional stream type once read (None: not yet).
        self._uni_type: int | None = None if kind == "uni" else -1
        self.control = False
        self.verdict: Verdict | None = None
        #: (HTTP/3 error code, reason) of a CONNECTION_ERROR.
        self.error: tuple[int, str] = (0, "")

    def scan(self, data: bytes, fin: bool) -> Piece | None:
        """What of ``data`` the codec may see (None: nothing); :attr:`verdict`
        says if the scanner stopped (nothing more is passed on then)."""
        if self.verdict is not None:
            return None
        prefix = b""
        if self._uni_type is None:
            prefix, data = self._read_stream_type(data)
            if self._uni_type is None:
                # A unidirectional stream may end before its type arrives
                # (RFC 9114 section 6.2): nothing to tell the codec.
                return None
        if not self.control and self._uni_type >= 0:
            # A QPACK or unknown stream: the codec handles (or drops) it.
            whole = prefix + data
            return Piece(whole, fin) if whole or fin else None
        out = bytearray(prefix)
        i, end = 0, len(data)
        while i < end:
            if self._left:
                take = min(self._left, end - i)
                if not self._skip:
                    out += data[i : i + take]
                self._left -= take
                i += take
                if not self._left:
                    self._skip = False
                continue
            # A frame header: two variable-length integers.
            need = self._header_length()
            take = min(need - len(self._header), end - i)
            self._header += data[i : i + take]
            i += take
            if len(self._header) == need and self._header_length() == need:
                self._start_frame(out)
                if self.verdict is not None:
                    return Piece(bytes(out), False) if out else None
                if not self._left:
                    self._skip = False
        truncated = self._header or (self._skip and self._left)
        if fin and truncated and not self.control:
            # The codec cannot see a truncation in bytes it never got (a
            # control stream that ends is an error the codec reports).
            self._fail(H3_FRAME_ERROR, "the stream ended inside a frame")
            return Piece(bytes(out), False) if out else None
        return Piece(bytes(out), fin) if out or fin else None

    # -- internals ----------------------------------------------------------

    def _read_stream_type(self, data: bytes) -> tuple[bytes, bytes]:
        """(the stream type's bytes once complete, the rest of ``data``)."""
        header = self._header
        for i, byte in enumerate(data):
            header.append(byte)
            if len(header) == _varint_length(header[0]):
                self._uni_type = _varint(header, 0)
                self.control = self._uni_type == CONTROL_STREAM
                self._header = bytearray()
                # The type goes to the codec too: it decides what the stream is.
                return bytes(header), data[i + 1 :]
        return b"", b""

    def _header_length(self) -> int:
        """Bytes of the frame header being read, as far as known."""
        header = self._header
        if not header:
            return 1
        first = _varint_length(header[0])
        if len(header) <= first:
            return first + 1
        return first + _varint_length(header[first])

    def _start_frame(self, out: bytearray) -> None:
        header = bytes(self._header)
        self._header = bytearray()
        frame_type = _varint(header, 0)
        length = _varint(header, _varint_length(header[0]))
        self._left = length
        self._skip = frame_type not in KNOWN
        first, self._first = self._first, False
        if self.control and first and frame_type != SETTINGS:
            # RFC 9114 section 6.2.1 (an unknown type does not do either).
            self._fail(
                H3_MISSING_SETTINGS, "the control stream must start with SETTINGS"
            )
            return
        if self._skip:
            return
        if self.control:
            self._check_control(frame_type, length)
        elif frame_type in CONTROL_FRAMES or frame_type in RESERVED_HTTP2:
            self._fail(
                H3_FRAME_UNEXPECTED, f"frame type 0x{frame_type:x} on a request stream"
            )
        elif frame_type in (HEADERS, PUSH_PROMISE) and length > self._max_headers:
            self.verdict = Verdict.TOO_LARGE
        if self.verdict is None:
            out += header

    def _check_control(self, frame_type: int, length: int) -> None:
        if frame_type in MESSAGE_FRAMES or frame_type in RESERVED_HTTP2:
            self._fail(
                H3_FRAME_UNEXPECTED,
                f"frame type 0x{frame_type:x} on the control stream",
            )
        elif frame_type == SETTINGS and length > MAX_SETTINGS_FRAME:
            self._fail(
                H3_EXCESSIVE_LOAD,
                f"a {length}-byte SETTINGS frame (at most {MAX_SETTINGS_FRAME})",
            )
        elif frame_type != SETTINGS and length > 8:
            self._fail(
                H3_FRAME_ERROR,
                f"a {length}-byte frame of type 0x{frame_type:x} (one integer)",
            )

    def _fail(self, code: int, reason: str) -> None:
        self.verdict = Verdict.CONNECTION_ERROR
        self.error = (code, reason)


__all__ = [
    "MAX_SETTINGS_FRAME",
    "FrameScanner",
    "Piece",
    "Verdict",
]
