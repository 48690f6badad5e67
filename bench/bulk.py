"""bench/bulk: a 50 MB one-stream download on loopback.

quicconn's blocking client versus aioquic's own asyncio client, both against
the same aioquic asyncio server (tests/peers/aioquic_server.py, run as a
separate process), alternating runs in one invocation.  Prints goodput and
the client's CPU seconds for each run and the median ratio.

    python bench/bulk.py [--size 50000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys

from _common import Sample, aioquic_server, env_note, make_certs, measure, median

import quicconn

ALPN = ["quicconn-test"]


def quicconn_download(port: int, ca: str, size: int) -> Sample:
    with measure() as m:
        conn = quicconn.connect("localhost", port, alpn=ALPN, cafile=ca)
        conn.write(b"send %d\n" % size)
        buf = bytearray(256 * 1024)
        received = 0
        while True:
            try:
                received += conn.readinto(buf)
            except quicconn.ZeroReturnError:
                break
        conn.shutdown(quicconn.SHUTDOWN_FLAG_RAPID)
        conn.free()
    if received != size:
        raise RuntimeError(f"quicconn received {received} of {size} bytes")
    return Sample(m[0], m[1], received)


def aioquic_download(port: int, ca: str, size: int) -> Sample:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    async def run() -> int:
        config = QuicConfiguration(
            is_client=True, alpn_protocols=ALPN, verify_mode=ssl.CERT_REQUIRED
        )
        config.load_verify_locations(ca)
        config.max_data = 4 * 1024 * 1024
        config.max_stream_data = 1024 * 1024
        async with connect("localhost", port, configuration=config) as client:
            reader, writer = await client.create_stream()
            writer.write(b"send %d\n" % size)
            received = 0
            while True:
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    break
                received += len(chunk)
            client.close()
            return received

    with measure() as m:
        received = asyncio.run(run())
    if received != size:
        raise RuntimeError(f"aioquic received {received} of {size} bytes")
    return Sample(m[0], m[1], received)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    certs = make_certs()
    results: dict[str, list[Sample]] = {"quicconn": [], "aioquic": []}
    print(
        f"bench/bulk: {args.size / 1e6:.0f} MB download, {args.rounds} rounds "
        f"alternating; {env_note()}"
    )
    with aioquic_server(certs) as port:
        for i in range(args.rounds):
            for name, fn in (
                ("quicconn", quicconn_download),
                ("aioquic", aioquic_download),
            ):
                sample = fn(port, str(certs.ca), args.size)
                results[name].append(sample)
                print(
                    f"  round {i + 1} {name:9s} {sample.mbit_per_s:7.1f} Mbit/s  "
                    f"{sample.seconds:6.2f} s wall  {sample.cpu:6.2f} s CPU",
                    flush=True,
                )
    q = median([s.mbit_per_s for s in results["quicconn"]])
    a = median([s.mbit_per_s for s in results["aioquic"]])
    qc = median([s.cpu for s in results["quicconn"]])
    ac = median([s.cpu for s in results["aioquic"]])
    print(f"median goodput: quicconn {q:.1f} Mbit/s, aioquic asyncio {a:.1f} Mbit/s")
    print(f"median client CPU: quicconn {qc:.2f} s, aioquic asyncio {ac:.2f} s")
    print(f"ratio quicconn/aioquic goodput: {q / a:.2f}x")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
