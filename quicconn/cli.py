"""The ``quicconn`` command: ``get``, ``serve`` and ``demo``.

* ``quicconn get URL... [-o DIR]`` downloads over HTTP/3 (or hq-interop),
  all URLs of one server over one connection, with a progress bar per file
  and a summary;
* ``quicconn serve DIR`` serves a directory over HTTP/3 and hq-interop;
* ``quicconn demo`` does both on loopback, with a generated certificate,
  explaining each step.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TextIO
from urllib.parse import urlsplit

from tqdm import tqdm

from ._certs import make_pki
from ._constants import (
    EARLY_DATA_ACCEPTED,
    LISTENER_FLAG_NO_VALIDATE,
    QUIC_VERSION_1,
    QUIC_VERSION_2,
    SERVER,
)
from ._errors import Error, VerificationError
from ._objects.context import Context
from ._objects.session import Session
from .http import ALPN_H3, ALPN_HQ, ClientOptions, Download, FileServer, HttpClient
from .http.client import StallError


class UsageError(Exception):
    """A command-line mistake, reported without a traceback."""


# -- get ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str


def parse_url(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"not an https:// URL: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.hostname, parts.port or 443, path)


class _Progress:
    """tqdm bars (one per file for a few files, one overall for many)."""

    def __init__(self, downloads: int, enabled: bool) -> None:
        self.enabled = enabled
        self._per_file = downloads <= 8
        self._bars: dict[str, tqdm[NoReturn]] = {}
        self._overall: tqdm[NoReturn] | None = None
        if enabled and not self._per_file:
            self._overall = tqdm(unit="B", unit_scale=True, desc=f"{downloads} files")

    def update(self, download: Download, nbytes: int) -> None:
        if not self.enabled:
            return
        if self._overall is not None:
            self._overall.update(nbytes)
            return
        bar = self._bars.get(download.path)
        if bar is None:
            bar = tqdm(unit="B", unit_scale=True, desc=download.path, leave=True)
            self._bars[download.path] = bar
        bar.update(nbytes)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        if self._overall is not None:
            self._overall.close()


def cmd_get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    targets = [parse_url(url) for url in args.urls]
    if args.output is None and len(targets) > 1:
        raise UsageError("several URLs need -o DIR to save them into")
    if args.zero_rtt and not args.resume:
        raise UsageError("--0rtt needs --resume FILE (a session from an earlier run)")
    session: Session | None = None
    if args.resume and os.path.exists(args.resume):
        try:
            session = Session.from_bytes(Path(args.resume).read_bytes())
        except ValueError as exc:
            raise UsageError(f"{args.resume}: {exc}") from exc
    output = Path(args.output) if args.output else None
    failures = 0
    servers: dict[tuple[str, int], list[str]] = {}
    for target in targets:
        servers.setdefault((target.host, target.port), []).append(target.path)
    for (host, port), paths in servers.items():
        options = ClientOptions(
            alpn=args.alpn,
            cafile=args.ca,
            verify=not args.insecure,
            keylog_file=args.keylog,
            qlog_dir=args.qlog_dir,
            session=session,
            early_data=args.zero_rtt,
            stall_timeout=args.timeout,
            ciphersuites=args.ciphers,
            key_update=args.key_update,
            quic_versions=_quic_versions(args.quic_version),
            initial_version=QUIC_VERSION_1,
        )
        progress = _Progress(len(paths), enabled=not args.quiet and err.isatty())
        started = time.monotonic()
        try:
            with HttpClient(host, port, options) as client:
                downloads = client.fetch(paths, output, progress.update)
                ticket = client.new_session_ticket()
                resumed = client.conn.session_reused()
                early = client.conn.get_early_data_status() == EARLY_DATA_ACCEPTED
                handshake = client.handshake_seconds
        except VerificationError as exc:
            print(f"quicconn: {host}:{port}: {exc}", file=err)
            return 1
        except StallError as exc:
            print(f"quicconn: {host}:{port}: timed out: {exc}", file=err)
            return 1
        except (Error, OSError, ValueError) as exc:
            print(f"quicconn: {host}:{port}: {exc}", file=err)
            return 1
        finally:
            progress.close()
        elapsed = time.monotonic() - started
        if args.resume and ticket is not None:
            Path(args.resume).write_bytes(ticket.to_bytes())
        total = sum(d.received for d in downloads)
        for download in downloads:
            if not download.ok:
                failures += 1
                reason = download.error or f"status {download.status}"
                print(f"quicconn: {download.path}: {reason}", file=err)
        if output is None and downloads and downloads[0].ok:
            sys.stdout.buffer.write(bytes(downloads[0].body))
            sys.stdout.flush()
        notes = [f"ALPN {args.alpn}"]
        if resumed:
            notes.append("session resumed")
        if early:
            notes.append("0-RTT accepted")
        hs = "?" if handshake is None else f"{handshake * 1000:.1f} ms"
        print(
            f"{host}:{port}: handshake {hs} ({', '.join(notes)}); "
            f"{len(downloads) - failures}/{len(downloads)} files, {total:,} bytes "
            f"in {elapsed:.2f} s, {total * 8 / max(elapsed, 1e-9) / 1e6:.1f} Mbit/s",
            file=err,
        )
    return 1 if failures else 0


def _quic_versions(name: str) -> list[int]:
    """--quic-version: v1 only, or v2 first (the connection starts in v1)."""
    return [QUIC_VERSION_2, QUIC_VERSION_1] if name == "v2" else [QUIC_VERSION_1]


# -- serve ---------------------------------------------------------------------


def _server_context(
    args: argparse.Namespace, err: TextIO
) -> tuple[Context, str | None]:
    ctx = Context(SERVER)
    ca_note = None
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    else:
        directory = Path(tempfile.mkdtemp(prefix="quicconn-serve-"))
        pki = make_pki(directory)
        ctx.load_cert_chain(pki.cert, pki.key)
        ca_note = str(pki.ca)
        print(
            f"no --cert given: generated one for localhost; clients trust {pki.ca}",
            file=err,
        )
    ctx.set_alpn_protos([ALPN_H3, ALPN_HQ])
    if args.keylog:
        ctx.keylog_filename = args.keylog
    if args.qlog_dir:
        ctx.qlog_dir = args.qlog_dir
    return ctx, ca_note


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        raise UsageError(f"{args.directory!r} is not a directory")
    if args.key and not args.cert:
        raise UsageError("--key needs --cert")
    ctx, _ = _server_context(args, err)
    flags = LISTENER_FLAG_NO_VALIDATE if args.no_retry else 0
    listener = ctx.new_listener((args.host, args.port), flags)
    server = FileServer(listener, root)
    host, port = listener.local_address()[:2]
    print(
        f"serving {root.resolve()} on https://{host}:{port}/ (h3, hq-interop)",
        file=err,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        listener.free()
        print(
            f"served {server.stats.requests} requests, "
            f"{server.stats.bytes_sent:,} bytes",
            file=err,
        )
    return 0


# -- demo ----------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="quicconn-demo-") as tmp:
        pki = make_pki(Path(tmp) / "pki")
        say("1. generated a throwaway CA and a certificate for localhost")
        www = Path(tmp) / "www"
        www.mkdir()
        payload = os.urandom(args.size)
        (www / "demo.bin").write_bytes(payload)
        ctx = Context(SERVER)
        ctx.load_cert_chain(pki.cert, pki.key)
        ctx.set_alpn_protos([ALPN_H3, ALPN_HQ])
        listener = ctx.new_listener(("127.0.0.1", 0))
        server = FileServer(listener, www)
        port = listener.local_address()[1]
        stop = threading.Event()
        thread = threading.Thread(
            target=server.serve_forever, args=(stop,), daemon=True
        )
        thread.start()
        say(
            f"2. serving {www} over HTTP/3 on udp://127.0.0.1:{port} "
            "(Retry address validation on)"
        )
        url = f"https://localhost:{port}/demo.bin"
        try:
            options = ClientOptions(alpn=ALPN_H3, cafile=str(pki.ca))
            started = time.monotonic()
            with HttpClient("localhost", port, options) as client:
                client.connect()
                say(
                    f"3. handshake with localhost complete in "
                    f"{(client.handshake_seconds or 0) * 1000:.1f} ms: certificate "
                    f"verified against the demo CA, ALPN "
                    f"{client.conn.get0_alpn_selected()!r}, "
                    f"{listener.stats.retries_sent} Retry round trip"
                )
                (download,) = client.fetch(["/demo.bin"])
                elapsed = time.monotonic() - started
                ok = download.ok and bytes(download.body) == payload
                say(
                    f"4. GET {url}: status {download.status}, "
                    f"{download.received:,} bytes "
                    f"({'matches the file' if ok else 'MISMATCH'}) in {elapsed:.2f} s, "
                    f"{download.received * 8 / elapsed / 1e6:.1f} Mbit/s"
                )
            say(f"5. connection {client.conn.get_conn_close_info()}")
        except Error as exc:
            say(f"demo failed: {exc} (SSL_get_error() = {exc.code})")
            return 1
        finally:
            stop.set()
            thread.join(5)
            server.close()
            listener.free()
        return 0 if ok else 1


# -- entry point -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quicconn", description="OpenSSL's QUIC API in Python: tools and demos"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log what the QUIC stack reports (otherwise errors are summarised)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    get = commands.add_parser("get", help="download URLs over HTTP/3 or hq-interop")
    get.add_argument("urls", nargs="+", metavar="URL")
    get.add_argument("-o", "--output", metavar="DIR", help="save files into DIR")
    get.add_argument("--alpn", choices=[ALPN_H3, ALPN_HQ], default=ALPN_H3)
    trust = get.add_mutually_exclusive_group()
    trust.add_argument("--ca", metavar="FILE", help="trust this CA (default: system)")
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    get.add_argument("--keylog", metavar="FILE", help="append TLS secrets (NSS format)")
    get.add_argument(
        "--qlog-dir", metavar="DIR", help="write a qlog trace per connection"
    )
    get.add_argument(
        "--resume",
        metavar="FILE",
        help="resume the session stored in FILE, and store the new one",
    )
    get.add_argument(
        "--0rtt",
        dest="zero_rtt",
        action="store_true",
        help="send the requests as 0-RTT early data (needs --resume)",
    )
    get.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up when the server sends nothing for this long",
    )
    get.add_argument(
        "--ciphers",
        metavar="LIST",
        help="offer only these TLS 1.3 suites (colon-separated, OpenSSL names)",
    )
    get.add_argument(
        "--quic-version",
        choices=["v1", "v2"],
        default="v1",
        help="v2: start in QUIC v1 and let the server switch to v2",
    )
    get.add_argument(
        "--key-update",
        action="store_true",
        help="update the 1-RTT keys right after the handshake",
    )
    get.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    get.set_defaults(handler=cmd_get)

    serve = commands.add_parser("serve", help="serve a directory over HTTP/3 and hq")
    serve.add_argument("directory")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=4433)
    serve.add_argument("--cert", metavar="FILE")
    serve.add_argument("--key", metavar="FILE")
    serve.add_argument(
        "--no-retry", action="store_true", help="skip Retry address validation"
    )
    serve.add_argument("--keylog", metavar="FILE")
    serve.add_argument("--qlog-dir", metavar="DIR")
    serve.set_defaults(handler=cmd_serve)

    demo = commands.add_parser(
        "demo", help="serve and fetch a file on loopback, explaining each step"
    )
    demo.add_argument(
        "--size",
        type=int,
        default=2_000_000,
        help="bytes in the demo file (default 2 MB)",
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # aioquic logs each connection failure itself; the commands report them
    # in one line, so its records are shown only when asked for.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL,
        format="%(name)s: %(message)s",
    )
    try:
        return int(args.handler(args, sys.stdout, sys.stderr))
    except UsageError as exc:
        parser.exit(2, f"quicconn: error: {exc}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "Target",
    "UsageError",
    "build_parser",
    "main",
    "parse_url",
]
