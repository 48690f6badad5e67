"""An aioquic asyncio HTTP/3 server that echoes HTTP datagrams (RFC 9297).

    python tests/peers/aioquic_h3_datagram_server.py --cert C --key K

Prints ``READY <port>``.  A request gets a 200 response head (the stream
stays open); every HTTP datagram is sent back on its stream, prefixed
``echo:``.  aioquic announces SETTINGS_H3_DATAGRAM only together with
WebTransport, so the server enables that too.
"""

from __future__ import annotations

import argparse
import asyncio

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DatagramReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration


class EchoDatagrams(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._h3 = H3Connection(self._quic, enable_webtransport=True)

    def quic_event_received(self, event) -> None:  # type: ignore[no-untyped-def]
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self._h3.send_headers(h3_event.stream_id, [(b":status", b"200")])
            elif isinstance(h3_event, DatagramReceived):
                self._h3.send_datagram(h3_event.stream_id, b"echo:" + h3_event.data)
        self.transmit()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    config = QuicConfiguration(
        is_client=False, alpn_protocols=H3_ALPN, max_datagram_frame_size=65536
    )
    config.load_cert_chain(args.cert, args.key)
    server = await serve(
        "127.0.0.1", 0, configuration=config, create_protocol=EchoDatagrams
    )
    port = server._transport.get_extra_info("sockname")[1]
    print(f"READY {port}", flush=True)
    await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
