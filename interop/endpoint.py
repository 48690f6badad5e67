"""quicconn's endpoint for the QUIC interop runner (``python -m interop.endpoint``).

The runner starts every implementation the same way: ``ROLE`` (client or
server), ``TESTCASE``, for a client ``REQUESTS`` (space-separated URLs), and
``SSLKEYLOGFILE`` / ``QLOGDIR`` for the evidence; files are served from
``/www``, saved to ``/downloads``, and the server's certificate is in
``/certs``.  An endpoint exits 127 for a testcase it does not implement.

For local runs the directories and the server's address can be moved with
``WWW``, ``DOWNLOADS``, ``CERTS``, ``HOST`` and ``PORT``, and ``ALPN=h3``
runs any testcase over HTTP/3 (for peers without hq-interop).  The server
prints ``LISTENING <host> <port>`` once bound.  The client prints one
``RESULT {json}`` line describing its connections (for tests; the runner
judges from packet captures).

A client verifies the server against ``CERTS/ca.pem`` when that file exists;
otherwise (the real runner gives clients no CA) it does not verify, and says
so on stderr.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from quicconn import (
    EARLY_DATA_ACCEPTED,
    LISTENER_FLAG_NO_VALIDATE,
    QUIC_VERSION_1,
    QUIC_VERSION_2,
    SERVER,
    Context,
    Error,
    Session,
)
from quicconn.http import ALPN_H3, ALPN_HQ, ClientOptions, FileServer, HttpClient
from quicconn.http.client import StallError

UNSUPPORTED_EXIT = 127

#: Client testcases and what the client does differently for each.
CLIENT_TESTCASES = frozenset(
    {
        "handshake",
        "transfer",
        "longrtt",
        "chacha20",
        "multiplexing",
        "retry",
        "resumption",
        "zerortt",
        "http3",
        "multiconnect",
        "keyupdate",
        "v2",
        "amplificationlimit",
        "blackhole",
        "handshakeloss",
        "transferloss",
        "handshakecorruption",
        "transfercorruption",
        "ipv6",
        "goodput",
        "crosstraffic",
        "rebind-port",
        "rebind-addr",
    }
)
#: The server only varies Retry (on for ``retry``, off otherwise, as the
#: runner's handshake check expects none).
SERVER_TESTCASES = CLIENT_TESTCASES
WHY_UNSUPPORTED = {
    "connectionmigration": (
        "aioquic's core, under quicconn, cannot migrate a client to a new path "
        "or to the server's preferred address"
    ),
    "ecn": "quicconn neither sets nor reports ECN codepoints",
    "versionnegotiation": "quicconn's client starts only in versions it supports",
}


class UsageError(Exception):
    """The environment does not describe a runnable job."""


@dataclass(frozen=True)
class Job:
    """The runner's environment, read once."""

    role: str
    testcase: str
    requests: tuple[str, ...] = ()
    www: Path = Path("/www")
    downloads: Path = Path("/downloads")
    certs: Path = Path("/certs")
    keylog: str | None = None
    qlog_dir: str | None = None
    host: str = "::"
    port: int = 443
    alpn: str | None = None

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> Job:
        role = env.get("ROLE", "")
        if role not in ("client", "server"):
            raise UsageError(f"ROLE must be client or server, got {role!r}")
        testcase = env.get("TESTCASE", "")
        if not testcase:
            raise UsageError("TESTCASE is not set")
        alpn = env.get("ALPN") or None
        if alpn not in (None, ALPN_H3, ALPN_HQ):
            raise UsageError(f"ALPN must be {ALPN_H3} or {ALPN_HQ}, got {alpn!r}")
        try:
            port = int(env.get("PORT", "443"))
        except ValueError:
            raise UsageError(f"PORT is not a number: {env['PORT']!r}") from None
        return cls(
            role=role,
            testcase=testcase,
            requests=tuple(env.get("REQUESTS", "").split()),
            www=Path(env.get("WWW", "/www")),
            downloads=Path(env.get("DOWNLOADS", "/downloads")),
            certs=Path(env.get("CERTS", "/certs")),
            keylog=env.get("SSLKEYLOGFILE") or None,
            qlog_dir=env.get("QLOGDIR") or None,
            host=env.get("HOST", "::"),
            port=port,
            alpn=alpn,
        )


# ----------------------------------------------------------------------
# server
# ----------------------------------------------------------------------


def _bind_address(host: str, port: int) -> tuple[str, int]:
    """``::`` (dual stack) unless this machine has no IPv6."""
    if host == "::" and not socket.has_ipv6:
        return ("0.0.0.0", port)
    return (host, port)


def run_server(job: Job, stop: threading.Event) -> int:
    ctx = Context(SERVER)
    ctx.load_cert_chain(job.certs / "cert.pem", job.certs / "priv.key")
    ctx.set_alpn_protos([ALPN_HQ, ALPN_H3])
    if job.keylog:
        ctx.keylog_filename = job.keylog
    if job.qlog_dir:
        ctx.qlog_dir = job.qlog_dir
    flags = 0 if job.testcase == "retry" else LISTENER_FLAG_NO_VALIDATE
    listener = ctx.new_listener(_bind_address(job.host, job.port), flags)
    server = FileServer(listener, job.www)
    host, port = listener.local_address()[:2]
    print(f"LISTENING {host} {port}", flush=True)
    try:
        server.serve_forever(stop)
    finally:
        server.close()
        listener.free()
    return 0


# ----------------------------------------------------------------------
# client
# ----------------------------------------------------------------------


@dataclass
class ConnectionReport:
    """What one client connection did (for the RESULT line)."""

    files: int
    resumed: bool
    early_data_accepted: bool
    cipher: str | None
    version: int | None
    alpn: str | None


@dataclass
class ClientReport:
    connections: list[ConnectionReport] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    paths: tuple[str, ...]


def parse_requests(requests: tuple[str, ...]) -> Target:
    if not requests:
        raise UsageError("REQUESTS is empty")
    hosts = set()
    paths = []
    for url in requests:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise UsageError(f"not an https:// URL: {url!r}")
        hosts.add((parts.hostname, parts.port or 443))
        paths.append(parts.path or "/")
    if len(hosts) != 1:
        raise UsageError("REQUESTS must all name the same server")
    (host, port) = hosts.pop()
    return Target(host, port, tuple(paths))


def client_options(job: Job, session: Session | None = None) -> ClientOptions:
    ca = job.certs / "ca.pem"
    alpn = job.alpn or (ALPN_H3 if job.testcase == "http3" else ALPN_HQ)
    options = ClientOptions(
        alpn=alpn,
        cafile=str(ca) if ca.exists() else None,
        verify=ca.exists(),
        keylog_file=job.keylog,
        qlog_dir=job.qlog_dir,
        session=session,
        early_data=session is not None and job.testcase == "zerortt",
        # Under the runner's 30% loss a handshake can stall for many PTOs.
        stall_timeout=60.0,
        idle_timeout=60.0,
    )
    if job.testcase == "chacha20":
        options.ciphersuites = "TLS_CHACHA20_POLY1305_SHA256"
    if job.testcase == "keyupdate":
        options.key_update = True
    if job.testcase == "v2":
        options.quic_versions = [QUIC_VERSION_2, QUIC_VERSION_1]
        options.initial_version = QUIC_VERSION_1
    else:
        options.quic_versions = [QUIC_VERSION_1]
    return options


def _fetch(
    target: Target,
    paths: tuple[str, ...],
    options: ClientOptions,
    job: Job,
    report: ClientReport,
) -> Session | None:
    """One connection fetching ``paths``; returns its newest session ticket."""
    with HttpClient(target.host, target.port, options) as client:
        downloads = client.fetch(paths, job.downloads)
        failed = [d for d in downloads if not d.ok]
        conn = client.conn
        report.connections.append(
            ConnectionReport(
                files=len(downloads) - len(failed),
                resumed=conn.session_reused(),
                early_data_accepted=conn.get_early_data_status() == EARLY_DATA_ACCEPTED,
                cipher=conn.get_current_cipher(),
                version=conn.get_quic_version(),
                alpn=conn.get0_alpn_selected(),
            )
        )
        if failed:
            first = failed[0]
            raise Error(
                f"{len(failed)} of {len(downloads)} downloads failed; "
                f"{first.path}: {first.error or f'status {first.status}'}"
            )
        return client.new_session_ticket()


def run_client(job: Job, report: ClientReport) -> None:
    """Fetch every request as the testcase says; raises on failure."""
    target = parse_requests(job.requests)
    job.downloads.mkdir(parents=True, exist_ok=True)
    options = client_options(job)
    if not options.verify:
        print(
            f"endpoint: no {job.certs / 'ca.pem'}: not verifying the server",
            file=sys.stderr,
        )
    if job.testcase in ("multiconnect", "handshakeloss", "handshakecorruption"):
        for path in target.paths:
            _fetch(target, (path,), options, job, report)
    elif job.testcase in ("resumption", "zerortt") and len(target.paths) > 1:
        session = _fetch(target, target.paths[:1], options, job, report)
        if session is None:
            raise Error("the server sent no session ticket to resume with")
        _fetch(target, target.paths[1:], client_options(job, session), job, report)
    else:
        _fetch(target, target.paths, options, job, report)


# ----------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        job = Job.from_environ(os.environ if env is None else env)
    except UsageError as exc:
        print(f"endpoint: {exc}", file=sys.stderr)
        return 1
    known = CLIENT_TESTCASES if job.role == "client" else SERVER_TESTCASES
    if job.testcase not in known:
        why = WHY_UNSUPPORTED.get(job.testcase, "not implemented")
        print(
            f"endpoint: unsupported testcase {job.testcase!r}: {why}", file=sys.stderr
        )
        return UNSUPPORTED_EXIT
    if job.role == "server":
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            return run_server(job, stop)
        except (Error, OSError, ValueError) as exc:
            print(f"endpoint: server failed: {exc}", file=sys.stderr)
            return 1
    report = ClientReport()
    status = 0
    try:
        run_client(job, report)
    except UsageError as exc:
        print(f"endpoint: {exc}", file=sys.stderr)
        return 1
    except StallError as exc:
        print(f"endpoint: timed out: {exc}", file=sys.stderr)
        status = 1
    except (Error, OSError, ValueError) as exc:
        print(f"endpoint: {exc}", file=sys.stderr)
        status = 1
    print("RESULT " + json.dumps([asdict(c) for c in report.connections]), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
