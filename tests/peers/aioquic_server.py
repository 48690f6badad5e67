"""An aioquic asyncio server used as an independent peer by tests and bench/.

Run as a program::

    python tests/peers/aioquic_server.py --cert C --key K --port 0 [--retry]

It prints ``READY <port>`` once listening.  On every bidirectional stream the
first line picks the behaviour:

* ``echo\\n`` - send back everything that follows; FIN answers FIN;
* ``send N\\n`` - send N bytes of a repeating pattern, then FIN;
* ``sink\\n`` - read everything, then answer with the byte count and FIN;
* ``close CODE\\n`` - close the connection with application error CODE;
* ``after SECONDS send N\\n`` - stay silent for SECONDS, then ``send N``;
* ``GET /path HTTP/1.0`` - (OpenSSL's guide demos) once the request ends
  with FIN, answer a short HTTP/1.0 response, then FIN.
* a DATAGRAM frame (RFC 9221) - sent back once, prefixed ``echo:``;
* ``whoami\\n`` - answer with the client certificate's common name (or
  ``none``), then FIN.

``--request-client-cert`` makes the server ask for a client certificate
(aioquic's TLS stack has the switch, but only as a test hook), so a client's
CertificateVerify can be exercised.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import DatagramFrameReceived, StreamDataReceived
from cryptography.x509.oid import NameOID

PATTERN = bytes(range(256)) * 256  # 64 KiB
HTTP_RESPONSE = (
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    b"hello from the aioquic test server\n"
)


def pattern_bytes(n: int) -> bytes:
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


class AppProtocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._modes: dict[int, str] = {}
        self._heads: dict[int, bytearray] = {}
        self._counts: dict[int, int] = {}

    def quic_event_received(self, event) -> None:
        if isinstance(event, DatagramFrameReceived):
            # DATAGRAM frames (RFC 9221): echoed once, prefixed "echo:".
            self._quic.send_datagram_frame(b"echo:" + event.data)
            self.transmit()
            return
        if not isinstance(event, StreamDataReceived):
            return
        sid = event.stream_id
        data = event.data
        mode = self._modes.get(sid)
        if mode is None:
            head = self._heads.setdefault(sid, bytearray())
            head += data
            if b"\n" not in head:
                return
            line, _, rest = bytes(head).partition(b"\n")
            del self._heads[sid]
            words = line.decode().split()
            delay = 0.0
            if words[0] == "after":
                delay, words = float(words[1]), words[2:]
            mode = self._modes[sid] = words[0]
            data = rest
            if mode == "send":
                payload = pattern_bytes(int(words[1]))
                if delay:
                    asyncio.get_running_loop().call_later(
                        delay, self._send_later, sid, payload
                    )
                else:
                    self._quic.send_stream_data(sid, payload, True)
            elif mode == "close":
                self._quic.close(error_code=int(words[1]), reason_phrase="asked to")
            elif mode == "whoami":
                self._quic.send_stream_data(sid, self._client_name(), True)
            self._counts[sid] = 0
        if mode == "echo":
            self._quic.send_stream_data(sid, data, event.end_stream)
        elif mode == "GET":
            if event.end_stream:
                self._quic.send_stream_data(sid, HTTP_RESPONSE, True)
        elif mode == "sink":
            self._counts[sid] += len(data)
            if event.end_stream:
                self._quic.send_stream_data(sid, b"%d" % self._counts[sid], True)
        self.transmit()

    def _send_later(self, sid: int, payload: bytes) -> None:
        self._quic.send_stream_data(sid, payload, True)
        self.transmit()

    def _client_name(self) -> bytes:
        cert = self._quic.tls._peer_certificate
        if cert is None:
            return b"none"
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value).encode() if names else b"unnamed"


def request_client_certificates() -> None:
    """Turn on aioquic's (test-only) CertificateRequest for every connection."""
    original = QuicConnection._initialize

    def initialize(self, peer_cid: bytes) -> None:
        original(self, peer_cid)
        if not self._is_client:
            self.tls._request_client_certificate = True

    QuicConnection._initialize = initialize


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--alpn", action="append", default=None)
    parser.add_argument("--retry", action="store_true")
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    parser.add_argument("--request-client-cert", action="store_true")
    args = parser.parse_args()
    if args.request_client_cert:
        request_client_certificates()
    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=args.alpn or ["quicconn-test", "h3", "http/1.0"],
        idle_timeout=args.idle_timeout,
        max_data=4 * 1024 * 1024,
        max_stream_data=1024 * 1024,
        max_datagram_frame_size=65536,
    )
    config.load_cert_chain(args.cert, args.key)
    server = await serve(
        args.host,
        args.port,
        configuration=config,
        create_protocol=AppProtocol,
        retry=args.retry,
    )
    port = server._transport.get_extra_info("sockname")[1]
    print(f"READY {port}", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
