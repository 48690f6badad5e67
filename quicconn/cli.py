"""The ``quicconn`` command: ``get``, ``serve`` and ``demo``.

* ``quicconn get URL... [-o DIR|-]`` downloads over HTTP/3 (or hq-interop),
  all URLs of one server over one connection, each saved under its own URL
  path below DIR (through a temporary name, renamed only once complete), with
  a progress bar per file and a summary;
* ``quicconn serve DIR`` serves a directory over HTTP/3 and hq-interop
  (``--workers N``: N processes on one port, steered by connection ID);
* ``quicconn demo`` does both on loopback, with a generated certificate,
  explaining each step.

Every failure is one line on stderr that says what to do, with a non-zero
exit status (1: something failed, 2: the command line is wrong, 130:
interrupted); ``-v`` (anywhere on the line) adds the traceback and what the
QUIC stack logs.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn, TextIO
from urllib.parse import urlsplit

from tqdm import tqdm

from ._certs import CertFiles, make_pki, write_private
from ._constants import (
    EARLY_DATA_ACCEPTED,
    LISTENER_FLAG_NO_VALIDATE,
    QUIC_VERSION_1,
    QUIC_VERSION_2,
    SERVER,
)
from ._errors import Error, SyscallError, VerificationError
from ._objects.context import Context
from ._objects.listener import Listener
from ._objects.session import Session
from ._version import __version__
from .http import (
    ALPN_H3,
    ALPN_HQ,
    ClientOptions,
    Download,
    FileServer,
    HttpClient,
    StallError,
    local_path,
)
from .scale import ServerKeys, Worker, WorkerGroup
from .scale._group import DEFAULT_QUIC_LB


class UsageError(Exception):
    """A command-line mistake (exit status 2), reported without a traceback."""


class CommandError(Exception):
    """A failure the user can fix (exit status 1), reported in one line."""


# -- get ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    port: int
    path: str


def parse_url(url: str) -> Target:
    """An ``https://`` URL's server and path; UsageError says what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise UsageError(f"{url!r} is not an https:// URL (HTTP/3 needs https)")
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if netloc.count(":") > 1 and not netloc.startswith("["):
        raise UsageError(
            f"{url!r}: put an IPv6 address in brackets, as in https://[::1]:4433/"
        )
    if not parts.hostname:
        raise UsageError(f"{url!r} names no host")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None:
        port = 443
    if not 1 <= port <= 65535:
        shown = netloc.rsplit(":", 1)[-1]
        raise UsageError(
            f"{url!r}: {shown!r} is not a port; give a number from 1 to 65535 "
            "after the host, or none for 443"
        )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, parts.hostname, port, path)


def _saved_paths(targets: list[Target], output: Path) -> None:
    """Check every URL has its own place under ``output`` (UsageError if not)."""
    files: dict[Path, str] = {}
    for target in targets:
        try:
            path = local_path(output, target.path)
        except ValueError as exc:
            raise UsageError(f"{target.url}: {exc}; leave it out or fix it") from None
        if path in files:
            raise UsageError(
                f"{files[path]} and {target.url} would both be saved as {path}: "
                "fetch them into separate -o directories"
            )
        if path.is_dir():
            raise UsageError(
                f"{target.url} would be saved as {path}, which is a directory"
            )
        files[path] = target.url
    for path, url in files.items():
        for parent in path.parents:
            if parent in files:
                raise UsageError(
                    f"{parent} would be the file of {files[parent]} and a "
                    f"directory for {url}: fetch them into separate -o directories"
                )


class _Progress:
    """tqdm bars (one per file for a few files, one overall for many).

    A file's bar has the response's content-length as its total, so it shows
    the percentage and the time left.
    """

    def __init__(self, downloads: int, enabled: bool, err: TextIO) -> None:
        self.enabled = enabled
        self._err = err
        self._per_file = downloads <= 8
        self._bars: dict[str, tqdm[NoReturn]] = {}
        self._overall: tqdm[NoReturn] | None = None
        if enabled and not self._per_file:
            self._overall = tqdm(
                unit="B", unit_scale=True, desc=f"{downloads} files", file=err
            )

    def update(self, download: Download, nbytes: int) -> None:
        if not self.enabled:
            return
        if self._overall is not None:
            self._overall.update(nbytes)
            return
        bar = self._bars.get(download.path)
        if bar is None:
            bar = tqdm(
                total=download.content_length,
                unit="B",
                unit_scale=True,
                desc=download.path,
                leave=True,
                file=self._err,
            )
            self._bars[download.path] = bar
        bar.update(nbytes)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        if self._overall is not None:
            self._overall.close()


def _keylog_path(args: argparse.Namespace, err: TextIO) -> str | None:
    """Where TLS secrets go: --keylog FILE, or $SSLKEYLOGFILE with
    --keylog-from-env (the environment variable alone logs nothing)."""
    path: str | None = args.keylog
    if args.keylog_from_env:
        path = os.environ.get("SSLKEYLOGFILE") or None
        if path is None:
            raise UsageError("--keylog-from-env: SSLKEYLOGFILE is not set")
    if path is not None:
        print(
            f"quicconn: warning: writing TLS secrets to {path}: whoever reads it "
            "can decrypt these connections",
            file=err,
        )
    return path


def _load_session(path: str | None) -> Session | None:
    if not path or not os.path.exists(path):
        return None
    try:
        return Session.from_bytes(Path(path).read_bytes())
    except (ValueError, OSError) as exc:
        raise UsageError(
            f"{path}: not a session quicconn stored ({exc}); remove it"
        ) from exc


def cmd_get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    targets = [parse_url(url) for url in args.urls]
    to_stdout = args.output in (None, "-")
    if to_stdout and len(targets) > 1:
        raise UsageError("several URLs need -o DIR to save them into")
    if args.zero_rtt and not args.resume:
        raise UsageError("--0rtt needs --resume FILE (a session from an earlier run)")
    output = None if to_stdout else Path(args.output)
    if output is not None:
        if output.exists() and not output.is_dir():
            raise UsageError(f"-o {args.output}: not a directory")
        _saved_paths(targets, output)
    session = _load_session(args.resume)
    args.keylog = _keylog_path(args, err)
    if args.insecure:
        print(
            "quicconn: warning: --insecure: server certificates are not verified; "
            "anyone on the path can impersonate the server and read the transfer",
            file=err,
        )
    servers: dict[tuple[str, int], list[Target]] = {}
    for target in targets:
        servers.setdefault((target.host, target.port), []).append(target)
    failed = 0
    for (host, port), group in servers.items():
        failed += _get_from(host, port, group, output, session, args, out, err)
    if len(targets) > 1:
        print(
            f"{len(targets) - failed}/{len(targets)} URLs fetched"
            + (f", {failed} failed" if failed else ""),
            file=err,
        )
    return 1 if failed else 0


def _get_from(
    host: str,
    port: int,
    group: list[Target],
    output: Path | None,
    session: Session | None,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
) -> int:
    """Fetch one server's URLs; how many failed (each reported in one line)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
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
    progress = _Progress(len(group), not args.quiet and err.isatty(), err)
    started = time.monotonic()
    stream = sys.stdout.buffer if output is None else None
    try:
        with HttpClient(host, port, options) as client:
            downloads = client.fetch(
                [t.path for t in group],
                output,
                progress.update,
                stream=stream,
                save_errors=args.save_errors,
            )
            ticket = client.new_session_ticket()
            resumed = client.conn.session_reused()
            early = client.conn.get_early_data_status() == EARLY_DATA_ACCEPTED
            handshake = client.handshake_seconds
    except socket.gaierror as exc:
        reason = f"cannot resolve {host!r} ({exc.strerror}): check the host name"
        return _server_failed(where, reason, group, err)
    except VerificationError as exc:
        reason = f"{exc} (give the server's CA with --ca FILE, or use --insecure)"
        return _server_failed(where, reason, group, err)
    except StallError as exc:
        return _server_failed(where, f"timed out: {exc}", group, err)
    except (Error, OSError, ValueError) as exc:
        return _server_failed(where, str(exc), group, err)
    finally:
        progress.close()
    elapsed = time.monotonic() - started
    if args.resume and ticket is not None:
        write_private(args.resume, ticket.to_bytes())  # it holds a secret
    failed = 0
    for target, download in zip(group, downloads, strict=True):
        if download.ok:
            continue
        failed += 1
        reason = download.error or f"status {download.status}"
        if download.error is None and download.received and not download.saved:
            reason += " (the error body was not saved: --save-errors saves it)"
        print(f"quicconn: {target.url}: {reason}", file=err)
    total = sum(d.received for d in downloads if d.ok)
    notes = [f"ALPN {args.alpn}"]
    if resumed:
        notes.append("session resumed")
    if early:
        notes.append("0-RTT accepted")
    hs = "?" if handshake is None else f"{handshake * 1000:.1f} ms"
    print(
        f"{where}: handshake {hs} ({', '.join(notes)}); "
        f"{len(downloads) - failed}/{len(downloads)} files, {total:,} bytes "
        f"in {elapsed:.2f} s, {total * 8 / max(elapsed, 1e-9) / 1e6:.1f} Mbit/s",
        file=err,
    )
    return failed


def _server_failed(where: str, reason: str, group: list[Target], err: TextIO) -> int:
    skipped = "" if len(group) == 1 else f" ({len(group)} URLs not fetched)"
    print(f"quicconn: {where}: {reason}{skipped}", file=err)
    return len(group)


def _quic_versions(name: str) -> list[int]:
    """--quic-version: v1 only, or v2 first (the connection starts in v1)."""
    return [QUIC_VERSION_2, QUIC_VERSION_1] if name == "v2" else [QUIC_VERSION_1]


# -- serve ---------------------------------------------------------------------


def port_number(text: str) -> int:
    """argparse type: a UDP port, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0-65535)")
    return port


def _pki(directory: Path) -> CertFiles:
    """The generated CA and certificate in ``directory`` (made if missing)."""
    files = CertFiles(
        directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    )
    if all(p.is_file() for p in (files.ca, files.cert, files.key)):
        return files
    directory.mkdir(parents=True, exist_ok=True)
    return make_pki(directory)


def _load_cert(ctx: Context, cert: str, key: str | None) -> None:
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise CommandError(
            f"cannot read {exc.filename}: no such file (give --cert/--key existing "
            "PEM files, or leave --cert out to generate a certificate)"
        ) from exc
    except PermissionError as exc:
        raise CommandError(f"cannot read {exc.filename}: permission denied") from exc
    except ValueError as exc:
        raise CommandError(
            f"{exc} (give --key the private key of the --cert certificate)"
        ) from exc


@dataclass(frozen=True)
class ServerFiles:
    """What a serving context is made from (picklable: workers get it)."""

    cert: str
    key: str | None
    keylog: str | None
    qlog_dir: str | None


def _server_files(
    args: argparse.Namespace, err: TextIO, generated: list[Path]
) -> ServerFiles:
    """The server's files; a temporary directory of generated keys, to be
    removed when serving ends, is appended to ``generated``."""
    if args.cert:
        cert, key = args.cert, args.key
    else:
        if args.pki_dir:
            directory = Path(args.pki_dir)
        else:
            directory = Path(tempfile.mkdtemp(prefix="quicconn-serve-"))
            generated.append(directory)
        pki = _pki(directory)
        cert, key = str(pki.cert), str(pki.key)
        kept = "" if args.pki_dir else " (removed when serve exits: --pki-dir keeps it)"
        print(
            f"no --cert given: using a certificate for localhost; "
            f"clients trust {pki.ca}{kept}",
            file=err,
        )
    if args.qlog_dir:
        Path(args.qlog_dir).mkdir(parents=True, exist_ok=True)
    return ServerFiles(cert, key, _keylog_path(args, err), args.qlog_dir)


def _server_context(files: ServerFiles) -> Context:
    ctx = Context(SERVER)
    _load_cert(ctx, files.cert, files.key)
    ctx.set_alpn_protos([ALPN_H3, ALPN_HQ])
    if files.keylog:
        ctx.keylog_filename = files.keylog
    if files.qlog_dir:
        ctx.qlog_dir = files.qlog_dir
    return ctx


def _bind_address(host: str, port: int) -> tuple[str, int]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise CommandError(
            f"cannot listen on --host {host!r}: {exc.strerror} (give an IP address "
            "of this machine, such as 127.0.0.1 or ::1, or a local host name)"
        ) from exc
    address = infos[0][4]
    return str(address[0]), port


def _listen(ctx: Context, host: str, port: int, flags: int) -> Listener:
    address = _bind_address(host, port)
    try:
        return ctx.new_listener(address, flags)
    except SyscallError as exc:
        shown = f"[{address[0]}]:{port}" if ":" in address[0] else f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            hint = "another program uses this port: stop it or choose another --port"
        elif exc.errno == errno.EADDRNOTAVAIL:
            hint = f"{host} is not an address of this machine: choose another --host"
        elif exc.errno == errno.EACCES:
            hint = "ports below 1024 need root: choose a higher --port"
        else:
            hint = "choose another --host or --port"
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandError(f"cannot listen on {shown}: {reason} ({hint})") from exc


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        raise UsageError(f"{args.directory!r} is not a directory")
    if args.key and not args.cert:
        raise UsageError("--key needs --cert")
    if args.cert and args.pki_dir:
        raise UsageError("--pki-dir is for a generated certificate: not with --cert")
    if args.workers is None and (args.server_id or args.keys_file):
        raise UsageError("--server-id and --keys-file are for --workers")
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Once: a second signal arriving while the first handler is inside
        # Event.set() (which holds a plain lock) would deadlock.
        if stopped_by:
            return
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    # From the start: a SIGTERM while the keys are made still removes them.
    previous = signal.signal(signal.SIGTERM, on_signal)
    generated: list[Path] = []
    try:
        return _serve(args, root, err, generated, stop, stopped_by)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for directory in generated:  # the generated private key goes too
            shutil.rmtree(directory, ignore_errors=True)


def _serve(
    args: argparse.Namespace,
    root: Path,
    err: TextIO,
    generated: list[Path],
    stop: threading.Event,
    stopped_by: list[str],
) -> int:
    files = _server_files(args, err, generated)
    ctx = _server_context(files)
    flags = LISTENER_FLAG_NO_VALIDATE if args.no_retry else 0
    if args.workers is not None:
        return _serve_workers(args, files, flags, err, stop, stopped_by)
    listener = _listen(ctx, args.host, args.port, flags)
    server = FileServer(listener, root)
    host, port = listener.local_address()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {root.resolve()} on https://{shown}:{port}/ (h3, hq-interop)",
        file=err,
        flush=True,
    )
    try:
        server.serve_forever(stop)
    except KeyboardInterrupt:
        stopped_by.append("SIGINT")
    finally:
        server.close()  # closes every connection: their qlogs are written
        listener.free()
        why = f" (stopped by {stopped_by[0]})" if stopped_by else ""
        stats = server.stats
        print(
            f"served {stats.connections} connections, {stats.requests} requests "
            f"({stats.not_found} not found), {stats.bytes_sent:,} bytes{why}",
            file=err,
            flush=True,
        )
    return 0


def _serve_worker(
    worker: Worker, root: str, files: ServerFiles, flags: int
) -> dict[str, int]:
    """One worker of ``quicconn serve --workers``: a FileServer until stopped."""
    listener = worker.new_listener(_server_context(files), flags)
    server = FileServer(listener, Path(root))
    try:
        server.serve_forever(worker.stop_event)
    finally:
        server.close()
    return dataclasses.asdict(server.stats)


def _group_keys(path: str | None) -> ServerKeys:
    """The keys in ``path`` (made there if missing), or fresh ones."""
    if path is None:
        return ServerKeys.generate()
    if not os.path.exists(path):
        keys = ServerKeys.generate()
        keys.save(path)
        return keys
    try:
        return ServerKeys.load(path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"--keys-file: {exc}") from exc


def _serve_workers(
    args: argparse.Namespace,
    files: ServerFiles,
    flags: int,
    err: TextIO,
    stop: threading.Event,
    stopped_by: list[str],
) -> int:
    """``serve --workers``: ``stop`` and ``stopped_by`` are cmd_serve's (its
    SIGTERM handler sets them)."""
    address = _bind_address(args.host, args.port)
    quic_lb = DEFAULT_QUIC_LB
    if args.server_id:
        # 8-byte IDs while the server ID allows (every core serves them; a
        # worker index and at least 4 random bytes follow the server ID).
        nonce = max(5, DEFAULT_QUIC_LB.cid_length - 1 - len(args.server_id))
        quic_lb = dataclasses.replace(
            quic_lb, server_id=args.server_id, nonce_length=nonce
        )
    group = WorkerGroup(
        _serve_worker,
        address,
        workers=args.workers,
        args=(str(Path(args.directory).resolve()), files, flags),
        quic_lb=quic_lb,
        keys=_group_keys(args.keys_file),
    )
    try:
        group.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise CommandError(
            f"cannot listen on {args.host}:{args.port}: {reason}"
        ) from exc
    except RuntimeError as exc:
        raise CommandError(f"{exc} (run with -v to see why)") from exc
    host, port = group.address
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving {Path(args.directory).resolve()} on https://{shown}:{port}/ "
        f"(h3, hq-interop) with {group.workers} workers, server ID "
        f"{quic_lb.server_id.hex()}",
        file=err,
        flush=True,
    )
    try:
        while not stop.wait(0.2) and not group.wait(0):
            pass
    except KeyboardInterrupt:
        stopped_by.append("SIGINT")
    finally:
        reports = group.stop()
    totals: dict[str, int] = {}
    per_worker = [0] * group.workers
    for report in reports:
        for name, value in (report.result or {}).items():
            totals[name] = totals.get(name, 0) + value
        per_worker[report.index] += (report.result or {}).get("connections", 0)
    why = f" (stopped by {stopped_by[0]})" if stopped_by else ""
    replaced = f", {group.restarts} replaced" if group.restarts else ""
    print(
        f"served {totals.get('connections', 0)} connections "
        f"({', '.join(map(str, per_worker))} per worker), "
        f"{totals.get('requests', 0)} requests ({totals.get('not_found', 0)} not "
        f"found), {totals.get('bytes_sent', 0):,} bytes with {group.workers} "
        f"workers{replaced}{why}",
        file=err,
        flush=True,
    )
    if group.failure is not None:
        raise CommandError(group.failure)
    return 0


def server_id_hex(text: str) -> bytes:
    """argparse type: a QUIC-LB server ID in hex (1-15 bytes)."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not hex (e.g. 0a01)") from None
    if not 1 <= len(value) <= 14:
        raise argparse.ArgumentTypeError("a server ID is 1 to 14 bytes here")
    return value


def worker_count(text: str) -> int:
    """argparse type: 1-255 worker processes."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= count <= 255:
        raise argparse.ArgumentTypeError(f"{count} workers: choose 1-255")
    return count


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
        ok = False
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


def _verbose_option() -> argparse.ArgumentParser:
    # One -v for the main parser and every subcommand: SUPPRESS keeps a
    # subcommand that was not given -v from resetting the main parser's.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and what the QUIC stack logs",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _verbose_option()
    parser = argparse.ArgumentParser(
        prog="quicconn",
        description="OpenSSL's QUIC API in Python: tools and demos",
        parents=[common],
    )
    parser.set_defaults(verbose=False)
    parser.add_argument(
        "--version", action="version", version=f"quicconn {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    get = commands.add_parser(
        "get",
        help="download URLs over HTTP/3 or hq-interop",
        parents=[common],
        description="Download URLs; the exit status is 0 only if every URL was "
        "fetched.",
    )
    get.add_argument("urls", nargs="+", metavar="URL", help="https:// URLs")
    get.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="save each URL under its own path in DIR (- or none: one URL to stdout)",
    )
    get.add_argument(
        "--save-errors",
        action="store_true",
        help="also save the bodies of error responses (status not 2xx)",
    )
    get.add_argument(
        "--alpn",
        choices=[ALPN_H3, ALPN_HQ],
        default=ALPN_H3,
        help="the protocol (default h3)",
    )
    trust = get.add_mutually_exclusive_group()
    trust.add_argument("--ca", metavar="FILE", help="trust this CA (default: system)")
    trust.add_argument(
        "--insecure", action="store_true", help="do not verify the server's certificate"
    )
    _keylog_arguments(get)
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
        help="give up when the server sends nothing for this long (default 10)",
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

    serve = commands.add_parser(
        "serve",
        help="serve a directory over HTTP/3 and hq",
        parents=[common],
        description="Serve the files below DIRECTORY over HTTP/3 and hq-interop "
        "until interrupted (Ctrl-C or SIGTERM).",
    )
    serve.add_argument("directory", help="the directory whose files are served")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1; ::1 for IPv6)",
    )
    serve.add_argument(
        "--port",
        type=port_number,
        default=4433,
        help="the UDP port (default 4433; 0: any free port)",
    )
    serve.add_argument(
        "--cert",
        metavar="FILE",
        help="the certificate chain (PEM; default: generate one for localhost)",
    )
    serve.add_argument(
        "--key", metavar="FILE", help="the certificate's private key (PEM)"
    )
    serve.add_argument(
        "--pki-dir",
        metavar="DIR",
        help="keep the generated CA and certificate in DIR (ca.pem, cert.pem, "
        "key.pem mode 0600; reused if there); default: a temporary directory, "
        "removed when serve exits",
    )
    serve.add_argument(
        "--no-retry", action="store_true", help="skip Retry address validation"
    )
    _keylog_arguments(serve)
    serve.add_argument(
        "--qlog-dir", metavar="DIR", help="write a qlog trace per connection"
    )
    serve.add_argument(
        "--workers",
        type=worker_count,
        metavar="N",
        help="serve from N processes on the one port, each packet steered to "
        "the worker that owns its connection (see docs/scaling.md)",
    )
    serve.add_argument(
        "--server-id",
        type=server_id_hex,
        metavar="HEX",
        help="with --workers: this host's QUIC-LB server ID, which a load "
        "balancer routes by (default 01)",
    )
    serve.add_argument(
        "--keys-file",
        metavar="FILE",
        help="with --workers: the keys hosts share (Retry tokens, resets, "
        "session tickets); made if missing; default: fresh keys",
    )
    serve.set_defaults(handler=cmd_serve)

    demo = commands.add_parser(
        "demo",
        help="serve and fetch a file on loopback, explaining each step",
        parents=[common],
    )
    demo.add_argument(
        "--size",
        type=int,
        default=2_000_000,
        help="bytes in the demo file (default 2 MB)",
    )
    demo.set_defaults(handler=cmd_demo)
    return parser


def _keylog_arguments(parser: argparse.ArgumentParser) -> None:
    keylog = parser.add_mutually_exclusive_group()
    keylog.add_argument(
        "--keylog",
        metavar="FILE",
        help="append TLS secrets (NSS format) to FILE, created mode 0600",
    )
    keylog.add_argument(
        "--keylog-from-env",
        action="store_true",
        help="append TLS secrets to the file $SSLKEYLOGFILE names (the variable "
        "alone logs nothing)",
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


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
    except KeyboardInterrupt:
        if args.verbose:
            traceback.print_exc()
        print(
            "quicconn: interrupted (unfinished downloads were removed)",
            file=sys.stderr,
        )
        return 130
    except CommandError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"quicconn: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the last line of defence: one line, no traceback
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (run with -v for details)"
        print(f"quicconn: error: {_describe(exc)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CommandError",
    "Target",
    "UsageError",
    "build_parser",
    "main",
    "parse_url",
    "port_number",
]
