"""DTLS records and datagrams: cutting OpenSSL's output, checking input.

A memory BIO is a byte stream; over UDP every DTLS record travels in a
datagram of its own (what OpenSSL does on a datagram BIO), so OpenSSL's
output is cut back into records, and a datagram is handed to OpenSSL only if
it is a run of whole, plausible records (RFC 6347 section 4.1.2.7: invalid
records should be silently discarded).
"""

from __future__ import annotations

__all__ = [
    "CONTENT_ALERT",
    "CONTENT_APPLICATION_DATA",
    "CONTENT_CHANGE_CIPHER_SPEC",
    "CONTENT_HANDSHAKE",
    "MAX_RECORD_PLAINTEXT",
    "RECORD_HEADER_LENGTH",
    "split_records",
    "well_formed",
]

#: DTLS record header: type(1) version(2) epoch(2) sequence(6) length(2).
RECORD_HEADER_LENGTH = 13
CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22
CONTENT_APPLICATION_DATA = 23
#: Largest plaintext in one record (SSL3_RT_MAX_PLAIN_LENGTH).
MAX_RECORD_PLAINTEXT = 16384


def split_records(data: bytes) -> list[bytes]:
    """Cut OpenSSL's output (a run of whole DTLS records) into records."""
    records: list[bytes] = []
    i = 0
    n = len(data)
    while i < n:
        if n - i < RECORD_HEADER_LENGTH:
            records.append(data[i:])  # pragma: no cover - OpenSSL writes whole records
            break
        end = i + RECORD_HEADER_LENGTH + int.from_bytes(data[i + 11 : i + 13], "big")
        records.append(data[i:end])
        i = end
    return records


_CONTENT_TYPES = frozenset(
    {
        CONTENT_CHANGE_CIPHER_SPEC,
        CONTENT_ALERT,
        CONTENT_HANDSHAKE,
        CONTENT_APPLICATION_DATA,
    }
)


def well_formed(datagram: bytes) -> bool:
    """Whether ``datagram`` is a run of whole, plausible DTLS 1.0/1.2 records.

    RFC 6347 section 4.1.2.7: invalid records should be silently discarded.
    OpenSSL drops some, but fails a handshake on others (an unknown content
    type, bytes after the last record, a malformed plaintext record in epoch
    0); quicconn drops datagrams holding such records before OpenSSL sees
    them.  Plaintext (epoch 0) records are checked against their framing:
    ChangeCipherSpec is one byte 1, an alert two bytes, a handshake fragment
    its 12-byte header plus the fragment it announces; application data is
    never in epoch 0.
    """
    i = 0
    n = len(datagram)
    if n == 0:
        return False
    while i < n:
        if n - i < RECORD_HEADER_LENGTH:
            return False
        kind = datagram[i]
        if kind not in _CONTENT_TYPES or datagram[i + 1] != 0xFE:
            return False
        if datagram[i + 2] not in (0xFF, 0xFD):  # DTLS 1.0, DTLS 1.2
            return False
        length = int.from_bytes(datagram[i + 11 : i + 13], "big")
        body = i + RECORD_HEADER_LENGTH
        end = body + length
        if end > n:
            return False
        if datagram[i + 3 : i + 5] == b"\0\0" and not _plaintext_ok(
            kind, datagram[body:end]
        ):
            return False
        i = end
    return True


def _plaintext_ok(kind: int, body: bytes) -> bool:
    if kind == CONTENT_CHANGE_CIPHER_SPEC:
        return body == b"\x01"
    if kind == CONTENT_ALERT:
        return len(body) == 2
    if kind == CONTENT_HANDSHAKE:
        # type(1) length(3) message_seq(2) fragment_offset(3) fragment_length(3)
        if len(body) < 12:
            return False
        msg_len = int.from_bytes(body[1:4], "big")
        frag_off = int.from_bytes(body[6:9], "big")
        frag_len = int.from_bytes(body[9:12], "big")
        return frag_len == len(body) - 12 and frag_off + frag_len <= msg_len
    return False  # application data is never sent in the clear
