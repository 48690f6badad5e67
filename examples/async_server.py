"""A nonblocking QUIC echo server whose private-key signing is offloaded.

MODE_ASYNC as in OpenSSL's SSL_set_async_callback(3) walk-through (see
docs/async.md): the context gets MODE_ASYNC, an offload engine and an async
callback; a handshake that needs the certificate key pauses
(``WantAsyncError``) while the engine signs; the event loop serves other
connections meanwhile; the engine's completion runs the callback, which
only reschedules the connection; the loop retries the same call, which
resumes the paused handshake.

    python examples/async_server.py --cert cert.pem --key key.pem [--port 4433]
        [--engine process|thread]
    python examples/async_server.py --self-test

The protocol: each client sends one message on a bidirectional stream and
concludes it; the server echoes it back and concludes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import enum
import os
import select
import socket
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import quicconn

ALPN = ["echo"]


class Phase(enum.Enum):
    HANDSHAKE = "handshake"
    READ = "read"
    CLOSE = "close"


class Session:
    """One connection's progress through the echo exchange."""

    def __init__(self, conn: quicconn.Connection) -> None:
        self.conn = conn
        self.phase = Phase.HANDSHAKE
        self.data = bytearray()

    def step(self) -> bool:
        """Advance as far as possible; False once the session is over."""
        conn = self.conn
        try:
            if self.phase is Phase.HANDSHAKE:
                conn.accept()  # step 2; a retry resumes a paused job (step 8)
                self.phase = Phase.READ
            if self.phase is Phase.READ:
                while True:
                    try:
                        self.data += conn.read()
                    except quicconn.ZeroReturnError:
                        break
                conn.write_ex2(bytes(self.data), quicconn.WRITE_FLAG_CONCLUDE)
                self.phase = Phase.CLOSE
            # CLOSE: wait for the client to close the connection.
            return not conn.shutdown(quicconn.SHUTDOWN_FLAG_WAIT_PEER)
        except quicconn.WantAsyncError:
            # Step 4: the engine is signing; the callback will reschedule us.
            return True
        except (quicconn.WantReadError, quicconn.WantWriteError):
            return True  # the network will wake the loop
        except quicconn.Error as exc:
            print(f"connection failed: {exc}", file=sys.stderr)
            return False


class EchoServer:
    """The event loop: one listener, a wake-up eventfd, the sessions."""

    def __init__(self, ctx: quicconn.Context, address: tuple[str, int]) -> None:
        self._rescheduled: deque[quicconn.Connection] = deque()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        # Step 1: the callback and its argument (inherited by connections).
        ctx.set_async_callback(self._on_async)
        ctx.set_async_callback_arg(self._wake)
        self.listener = ctx.new_listener(address)
        self.listener.listen()
        self.listener.set_blocking_mode(False)
        self.sessions: dict[quicconn.Connection, Session] = {}
        self.served = 0
        self.statuses: list[int] = []

    def _on_async(self, conn: quicconn.Connection, wake_fd: int) -> None:
        """Steps 6, 7 and 9: runs in the engine's thread; small, nonblocking.

        It only queues the connection and pokes the loop; get_async_status()
        tells a finished operation (OK) from an engine asking for a retry
        (EAGAIN) or failing (ERR) - all three are handled by retrying.
        """
        self.statuses.append(conn.get_async_status())
        self._rescheduled.append(conn)
        os.eventfd_write(wake_fd, 1)

    def run(self, stop: threading.Event | None = None) -> None:
        listener = self.listener
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        while stop is None or not stop.is_set():
            timeout = listener.get_event_timeout()
            wait_ms = 200.0 if timeout is None else min(timeout * 1000.0, 200.0)
            for fd, _ in poller.poll(wait_ms):
                if fd == self._wake:
                    with contextlib.suppress(BlockingIOError):
                        os.eventfd_read(self._wake)
            listener.handle_events()
            while True:
                conn = listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
                if conn is None:
                    break
                self.sessions[conn] = Session(conn)
            # Step 8: retry what the callback rescheduled, then everything
            # else (the network may have moved any connection along).
            while self._rescheduled:
                self._advance(self._rescheduled.popleft())
            for conn in list(self.sessions):
                self._advance(conn)

    def _advance(self, conn: quicconn.Connection) -> None:
        session = self.sessions.get(conn)
        if session is not None and not session.step():
            del self.sessions[conn]
            if session.phase is Phase.CLOSE:
                self.served += 1
            conn.free()

    def close(self) -> None:
        for conn in self.sessions:
            conn.free()
        self.listener.free()
        os.close(self._wake)


def make_engine(kind: str) -> quicconn.AsyncEngine:
    if kind == "process":
        return quicconn.ProcessPoolEngine(max_workers=2)
    return quicconn.ThreadPoolEngine(max_workers=2)


def server_context(
    cert: str, key: str, engine: quicconn.AsyncEngine
) -> quicconn.Context:
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protos(ALPN)
    ctx.set_mode(quicconn.MODE_ASYNC)  # step 2: MODE_ASYNC ...
    ctx.set_async_engine(engine)  # ... with an engine that can pause jobs
    return ctx


# ---------------------------------------------------------------------------
# --self-test: a throwaway CA, the server in a thread, a few clients
# ---------------------------------------------------------------------------


def write_test_pki(directory: Path) -> tuple[str, str, str]:
    """A CA and an RSA-2048 leaf for localhost, written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(paths[0]), str(paths[1]), str(paths[2])


def self_test(engine_kind: str, clients: int = 4) -> int:
    with tempfile.TemporaryDirectory() as tmp, make_engine(engine_kind) as engine:
        ca, cert, key = write_test_pki(Path(tmp))
        server = EchoServer(server_context(cert, key, engine), ("127.0.0.1", 0))
        port = int(server.listener.local_address()[1])
        stop = threading.Event()
        loop = threading.Thread(target=server.run, args=(stop,))
        loop.start()
        ok = True
        try:
            for i in range(clients):
                message = b"echo %d" % i
                ctx = quicconn.Context(quicconn.CLIENT)
                ctx.load_verify_locations(ca)
                ctx.set_alpn_protos(ALPN)
                conn = quicconn.Connection(ctx)
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.connect(("127.0.0.1", port))
                    conn.set_fd(sock)
                    conn.set1_host("localhost")
                    with conn:
                        conn.connect()
                        conn.write_ex2(message, quicconn.WRITE_FLAG_CONCLUDE)
                        echoed = bytearray()
                        with contextlib.suppress(quicconn.ZeroReturnError):
                            while True:
                                echoed += conn.read()
                        ok = ok and bytes(echoed) == message
        finally:
            stop.set()
            loop.join(timeout=10)
            server.close()
        statuses = set(server.statuses)
        if not ok or statuses != {quicconn.ASYNC_STATUS_OK}:
            print(f"self-test FAILED: echo ok={ok}, statuses={statuses}")
            return 1
        print(
            f"self-test passed: {clients} handshakes signed by the {engine_kind} "
            f"engine, {len(server.statuses)} async callbacks"
        )
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4433)
    parser.add_argument("--engine", choices=["thread", "process"], default="process")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        return self_test("thread") or self_test("process", clients=2)
    if not args.cert:
        parser.error("--cert is required (or use --self-test)")
    with make_engine(args.engine) as engine:
        server = EchoServer(
            server_context(args.cert, args.key, engine), (args.host, args.port)
        )
        print(f"listening on {args.host}:{args.port} ({args.engine} engine)")
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
