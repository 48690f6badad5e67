"""How to start each implementation as the runner's client or server.

The runner starts each implementation's container with ``ROLE``,
``TESTCASE``, ``REQUESTS`` and the ``/www``, ``/downloads``, ``/certs``
volumes.  Here there are no containers: quicconn runs its own endpoint
(``python -m interop.endpoint``, the same code its Docker image runs) with
that environment, and the other implementations, which have no endpoint
script on this machine, are adapted from the same inputs to their command
lines.  An adapter answers :data:`UNSUPPORTED` (with a reason) for a
testcase it cannot run, as an endpoint exits 127.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .peers import PeerPaths

#: The project's root: ``python -m interop.endpoint`` runs from here.
_ROOT = str(Path(__file__).resolve().parent.parent)

ALPN_HQ = "hq-interop"
ALPN_H3 = "h3"


@dataclass(frozen=True)
class Unsupported:
    reason: str


@dataclass(frozen=True)
class Command:
    """One process to run: arguments, extra environment, working directory.

    ``stdin`` is written to the process; ``stdout_path`` receives its output
    (for clients that print the body, like ``openssl s_client``).  With
    ``stdin_open_until`` the runner keeps stdin open until ``stdout_path``
    holds that many bytes, then closes it: ``s_client`` does not exit when
    the response stream ends, only when its input does.
    """

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stdin: bytes | None = None
    stdout_path: Path | None = None
    stdin_open_until: int | None = None


@dataclass(frozen=True)
class RunPaths:
    """A run's directories and files (the runner's volumes and logs)."""

    www: Path
    downloads: Path
    certs: Path
    server_keylog: Path
    client_keylog: Path
    server_qlog: Path
    client_qlog: Path


@dataclass(frozen=True)
class Endpoint:
    """What a testcase asks of one side."""

    testname: str  # what the endpoint is told (TESTCASE)
    alpn: str  # hq-interop, or h3 for http3 and for h3-only peers
    host: str  # the server's listening address
    port: int
    testcase: str  # the testcase being run (v2's server is told "transfer")


ServerPlan = Command | Unsupported
ClientPlan = list[Command] | Unsupported


class Implementation:
    name = ""
    #: Roles it can take, and the application protocols it speaks.
    roles: frozenset[str] = frozenset()
    alpns: frozenset[str] = frozenset({ALPN_HQ, ALPN_H3})
    url = ""

    def server(self, ep: Endpoint, paths: RunPaths) -> ServerPlan:
        return Unsupported(f"{self.name} has no server here")

    def client(
        self, ep: Endpoint, paths: RunPaths, requests: Sequence[str]
    ) -> ClientPlan:
        return Unsupported(f"{self.name} has no client here")


#: quicconn's QUIC cores, each a column and a row of the matrix.
QUICCONN_CORES = ("qh3", "aioquic")


class Quicconn(Implementation):
    """This project, through its interop endpoint, on one of its QUIC cores.

    ``quicconn-qh3`` and ``quicconn-aioquic``: the endpoint runs with
    ``QUICCONN_CORE`` set, so a testcase the core cannot do fails at
    configuration time instead of moving silently to the other core.
    """

    roles = frozenset({"server", "client"})
    url = "https://github.com/quicconn/quicconn"

    def __init__(self, core: str) -> None:
        self.core = core
        self.name = f"quicconn-{core}"

    def _installed(self) -> Unsupported | None:
        if importlib.util.find_spec(self.core) is None:
            return Unsupported(
                f"quicconn's {self.core} core: {self.core} is not installed"
            )
        return None

    def _env(self, role: str, ep: Endpoint, paths: RunPaths) -> dict[str, str]:
        keylog = paths.server_keylog if role == "server" else paths.client_keylog
        qlog = paths.server_qlog if role == "server" else paths.client_qlog
        return {
            "QUICCONN_CORE": self.core,
            "ROLE": role,
            "TESTCASE": ep.testname,
            "WWW": str(paths.www),
            "DOWNLOADS": str(paths.downloads),
            "CERTS": str(paths.certs),
            "SSLKEYLOGFILE": str(keylog),
            "QLOGDIR": str(qlog),
            "ALPN": ep.alpn,
        }

    def server(self, ep: Endpoint, paths: RunPaths) -> ServerPlan:
        if (missing := self._installed()) is not None:
            return missing
        env = self._env("server", ep, paths) | {"HOST": ep.host, "PORT": str(ep.port)}
        return Command([sys.executable, "-m", "interop.endpoint"], env, cwd=_ROOT)

    def client(
        self, ep: Endpoint, paths: RunPaths, requests: Sequence[str]
    ) -> ClientPlan:
        if (missing := self._installed()) is not None:
            return missing
        env = self._env("client", ep, paths) | {"REQUESTS": " ".join(requests)}
        return [Command([sys.executable, "-m", "interop.endpoint"], env, cwd=_ROOT)]


class Aioquic(Implementation):
    """aioquic's example programs (http3_server.py with demo:app, http3_client.py)."""

    name = "aioquic"
    roles = frozenset({"server", "client"})
    url = "https://github.com/aiortc/aioquic"

    def __init__(self, peers: PeerPaths) -> None:
        self.peers = peers

    def server(self, ep: Endpoint, paths: RunPaths) -> ServerPlan:
        if self.peers.http3_server is None or self.peers.aioquic_examples is None:
            return Unsupported("aioquic's examples are not installed")
        if ep.testname in ("connectionmigration", "ecn"):
            return Unsupported(
                f"not run against aioquic's example server: {ep.testname}"
            )
        args = [
            sys.executable,
            self.peers.http3_server,
            "--certificate",
            str(paths.certs / "cert.pem"),
            "--private-key",
            str(paths.certs / "priv.key"),
            "--host",
            ep.host,
            "--port",
            str(ep.port),
            "--secrets-log",
            str(paths.server_keylog),
            "--quic-log",
            str(paths.server_qlog),
        ]
        if ep.testname == "retry":
            args.append("--retry")
        args.append("demo:app")
        return Command(
            args, {"STATIC_ROOT": str(paths.www)}, cwd=self.peers.aioquic_examples
        )

    def client(
        self, ep: Endpoint, paths: RunPaths, requests: Sequence[str]
    ) -> ClientPlan:
        if self.peers.http3_client is None:
            return Unsupported("aioquic's examples are not installed")
        base = [
            sys.executable,
            self.peers.http3_client,
            "--ca-certs",
            str(paths.certs / "ca.pem"),
            "--output-dir",
            str(paths.downloads),
            "--secrets-log",
            str(paths.client_keylog),
            "--quic-log",
            str(paths.client_qlog),
        ]
        if ep.alpn == ALPN_HQ:
            base.append("--legacy-http")
        name = ep.testname
        if name == "chacha20":
            base += ["--cipher-suites", "CHACHA20_POLY1305_SHA256"]
        elif name == "keyupdate":
            base.append("--key-update")
        elif name == "v2":
            base.append("--negotiate-v2")
        elif name in ("connectionmigration", "ecn"):
            return Unsupported(f"aioquic's example client has no {name} mode")
        cwd = self.peers.aioquic_examples
        if name == "multiconnect":
            return [Command([*base, url], cwd=cwd) for url in requests]
        if name in ("resumption", "zerortt"):
            ticket = str(paths.downloads.parent / "aioquic-session-ticket")
            second = [*base, "--session-ticket", ticket]
            if name == "zerortt":
                second.append("--zero-rtt")
            return [
                Command([*base, "--session-ticket", ticket, requests[0]], cwd=cwd),
                Command([*second, *requests[1:]], cwd=cwd),
            ]
        return [Command([*base, *requests], cwd=cwd)]


_NGTCP2_NO_V2 = (
    "Debian's ngtcp2 0.12.1 knows only the QUIC v2 draft (0x709a50c4), "
    "not RFC 9369's 0x6b3343cf"
)


class Ngtcp2(Implementation):
    """ngtcp2's GnuTLS examples from Debian (HTTP/3 only: no hq-interop)."""

    name = "ngtcp2"
    roles = frozenset({"server", "client"})
    alpns = frozenset({ALPN_H3})
    url = "https://github.com/ngtcp2/ngtcp2"

    def __init__(self, peers: PeerPaths) -> None:
        self.peers = peers

    def server(self, ep: Endpoint, paths: RunPaths) -> ServerPlan:
        if self.peers.gtlsserver is None:
            return Unsupported("ngtcp2-server is not installed")
        if ep.testname in ("connectionmigration", "ecn"):
            return Unsupported(f"not run against gtlsserver: {ep.testname}")
        if ep.testcase == "v2":
            return Unsupported(_NGTCP2_NO_V2)
        args = [
            self.peers.gtlsserver,
            "-q",
            f"--htdocs={paths.www}",
            f"--qlog-dir={paths.server_qlog}",
            # Its default, 10 s, is shorter than the PTO backoff that 30%
            # loss can cause; 30 s is its idle timeout.
            "--handshake-timeout=30s",
        ]
        if ep.testname == "retry":
            args.append("--validate-addr")
        args += [
            ep.host,
            str(ep.port),
            str(paths.certs / "priv.key"),
            str(paths.certs / "cert.pem"),
        ]
        return Command(args, {"SSLKEYLOGFILE": str(paths.server_keylog)})

    def client(
        self, ep: Endpoint, paths: RunPaths, requests: Sequence[str]
    ) -> ClientPlan:
        if self.peers.gtlsclient is None:
            return Unsupported("ngtcp2-client is not installed")
        first = urlsplit(requests[0])
        host = (first.hostname or "").strip("[]")
        port = str(first.port)
        base = [
            self.peers.gtlsclient,
            "-q",
            "--exit-on-all-streams-close",
            f"--download={paths.downloads}",
            f"--qlog-dir={paths.client_qlog}",
            "--timeout=30s",
            # As for gtlsserver: its default, 10 s, is shorter than the PTO
            # backoff of 30% loss on a loaded machine.
            "--handshake-timeout=30s",
        ]
        name = ep.testname
        if name == "chacha20":
            # a GnuTLS priority string, not an OpenSSL suite name
            base.append(
                "--ciphers=NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305"
            )
        elif name == "keyupdate":
            base.append("--key-update=100ms")
        elif name == "v2":
            return Unsupported(_NGTCP2_NO_V2)
        elif name in ("connectionmigration", "ecn"):
            return Unsupported(f"not adapted for gtlsclient: {name}")
        env = {"SSLKEYLOGFILE": str(paths.client_keylog)}
        if name == "multiconnect":
            return [Command([*base, host, port, url], env) for url in requests]
        if name in ("resumption", "zerortt"):
            state = paths.downloads.parent
            saved = [
                f"--session-file={state / 'gtls-session'}",
                f"--tp-file={state / 'gtls-tp'}",
            ]
            second = [*base, *saved]
            if name == "resumption":
                second.append("--disable-early-data")
            else:
                # Path MTU probes (1406- and 1444-byte 1-RTT PINGs) would
                # count as 1-RTT data against the testcase's bound.
                second.append("--no-pmtud")
            return [
                Command([*base, *saved, host, port, requests[0]], env),
                Command([*second, host, port, *requests[1:]], env),
            ]
        return [Command([*base, host, port, *requests], env)]


class OpenSSLClient(Implementation):
    """OpenSSL 3.5's ``s_client -quic``: one hq-interop request per connection."""

    name = "openssl"
    roles = frozenset({"client"})
    alpns = frozenset({ALPN_HQ})
    url = "https://www.openssl.org/"

    _SINGLE_FILE = frozenset(
        {"handshake", "transfer", "retry", "chacha20", "multiconnect", "resumption"}
    )

    def __init__(self, peers: PeerPaths) -> None:
        self.peers = peers

    def client(
        self, ep: Endpoint, paths: RunPaths, requests: Sequence[str]
    ) -> ClientPlan:
        if self.peers.openssl35 is None:
            return Unsupported(
                "OpenSSL 3.5 is not installed (python -m interop.peers install)"
            )
        name = ep.testname
        if name not in self._SINGLE_FILE:
            return Unsupported(f"s_client has no {name} mode")
        if name not in ("multiconnect", "resumption") and len(requests) != 1:
            return Unsupported(
                "s_client carries one request per connection; "
                f"{len(requests)} files would need {len(requests)} handshakes"
            )

        def one(url: str, extra: list[str]) -> Command:
            parts = urlsplit(url)
            host = parts.hostname or ""
            target = f"[{host}]:{parts.port}" if ":" in host else f"{host}:{parts.port}"
            args = [
                self.peers.openssl35 or "",
                "s_client",
                "-quic",
                "-alpn",
                ALPN_HQ,
                "-connect",
                target,
                "-CAfile",
                str(paths.certs / "ca.pem"),
                "-verify_return_error",
                "-verify_ip",
                host,
                "-quiet",
                "-no_ign_eof",
                "-keylogfile",
                str(paths.client_keylog),
                *extra,
            ]
            if name == "chacha20":
                args += ["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"]
            file_name = os.path.basename(parts.path)
            return Command(
                args,
                stdin=f"GET {parts.path}\r\n".encode(),
                stdout_path=paths.downloads / file_name,
                stdin_open_until=(paths.www / file_name).stat().st_size,
            )

        if name == "resumption":
            session = str(paths.downloads.parent / "openssl-session.pem")
            return [
                one(requests[0], ["-sess_out", session]),
                *(one(u, ["-sess_in", session]) for u in requests[1:]),
            ]
        return [one(url, []) for url in requests]


def implementations(peers: PeerPaths) -> dict[str, Implementation]:
    impls: list[Implementation] = [
        *(Quicconn(core) for core in QUICCONN_CORES),
        Aioquic(peers),
        Ngtcp2(peers),
        OpenSSLClient(peers),
    ]
    return {impl.name: impl for impl in impls}


def is_quicconn(impl: Implementation) -> bool:
    """Whether ``impl`` is quicconn (on any core)."""
    return isinstance(impl, Quicconn)


def default_quicconn() -> str:
    """The name of quicconn's implementation on the core a client context
    gets here (``$QUICCONN_CORE``, else quicconn's "auto" choice)."""
    import quicconn

    return f"quicconn-{quicconn.Context(quicconn.CLIENT).core}"


def endpoint_alpn(testname: str, server: Implementation, client: Implementation) -> str:
    """h3 for http3, and for a pair where one side speaks no hq-interop."""
    if testname == "http3":
        return ALPN_H3
    if ALPN_HQ in server.alpns and ALPN_HQ in client.alpns:
        return ALPN_HQ
    return ALPN_H3
