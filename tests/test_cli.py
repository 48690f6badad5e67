"""The ``quicconn`` command as a user meets it: no lost files, no tracebacks.

Every test runs the command in its own process, the way a user does, against
quicconn's file server (in this process), the ``serve`` command, or a
misbehaving HTTP/3 server written for the test.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import quicconn
import quicconn.scale
from quicconn.cli import build_parser
from quicconn.http import (
    FileServer,
    HttpSession,
    RequestReceived,
    session_for,
)
from tests.conftest import free_udp_port
from tests.support.certs import CertFiles

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BIG = 30_000_000


def run_cli(
    *args: str, timeout: float = 90, stdout: object = subprocess.PIPE, cwd=None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quicconn", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
        cwd=cwd,
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("www")
    (root / "sub").mkdir()
    (root / "hello.txt").write_bytes(b"hello at the top\n")
    (root / "sub" / "hello.txt").write_bytes(b"hello in sub\n")
    (root / "random.bin").write_bytes(os.urandom(1_500_000))
    (root / "small.bin").write_bytes(b"x")
    with open(root / "big.bin", "wb") as file:
        for _ in range(BIG // 1_000_000):
            file.write(os.urandom(1_000_000))
    return root


@pytest.fixture(scope="module")
def port(pki: CertFiles, www: Path) -> Iterator[int]:
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3", "hq-interop"]
    )
    server = FileServer(listener, www)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    yield listener.local_address()[1]
    stop.set()
    thread.join(5)
    server.close()
    listener.free()


class BadServer:
    """Answers every request with ``content-length: total`` and then only
    ``sent`` bytes; then ends the stream (``stall=False``) or goes quiet."""

    def __init__(
        self, pki: CertFiles, total: int, sent: int, stall: bool, alpn: str = "h3"
    ) -> None:
        self.listener = quicconn.listen(
            ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=[alpn]
        )
        self.listener.set_blocking_mode(False)
        self.port = self.listener.local_address()[1]
        self.total, self.sent, self.stall = total, sent, stall
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sessions: list[HttpSession] = []
        pending: list[quicconn.Connection] = []
        while not self._stop.is_set():
            self.listener.handle_events()
            conn = self.listener.accept_connection(quicconn.ACCEPT_CONNECTION_NO_BLOCK)
            if conn is not None:
                pending.append(conn)
            for conn in list(pending):
                if conn.is_init_finished():
                    pending.remove(conn)
                    sessions.append(session_for(conn))
            for session in list(sessions):
                if session.conn.get_conn_close_info() is not None:
                    sessions.remove(session)
                    continue
                for event in session.process():
                    if isinstance(event, RequestReceived):
                        session.send_response_head(
                            event.stream_id,
                            200,
                            [(b"content-length", str(self.total).encode())],
                        )
                        session.send_body(
                            event.stream_id, b"y" * self.sent, not self.stall
                        )
                session.flush()
            self._stop.wait(0.002)
        for session in sessions:
            session.conn.free()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.free()


def files_under(directory: Path) -> list[str]:
    return sorted(
        str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()
    )


# -- where downloads go ----------------------------------------------------------


def test_same_names_in_different_directories_are_both_kept(pki, port, tmp_path):
    base = f"https://localhost:{port}"
    result = run_cli(
        "get", f"{base}/hello.txt", f"{base}/sub/hello.txt", "-o", str(tmp_path),
        "--ca", str(pki.ca),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hello.txt").read_bytes() == b"hello at the top\n"
    assert (tmp_path / "sub" / "hello.txt").read_bytes() == b"hello in sub\n"
    assert files_under(tmp_path) == ["hello.txt", "sub/hello.txt"]


@pytest.mark.parametrize(
    "path", ["/%2e%2e/escape.txt", "/sub/..%2f..%2fescape.txt", "/a%5c..%5cx"]
)
def test_a_url_path_that_would_leave_the_output_directory_is_refused(
    pki, port, tmp_path, path
):
    out = tmp_path / "out"
    result = run_cli(
        "get", f"https://localhost:{port}{path}", "-o", str(out), "--ca", str(pki.ca)
    )
    assert result.returncode == 2
    assert "would leave the output directory" in one_line(result.stderr)
    assert files_under(tmp_path) == []


def test_two_urls_for_one_file_are_refused_before_anything_is_fetched(
    pki, port, tmp_path
):
    result = run_cli(
        "get", f"https://localhost:{port}/hello.txt",
        f"https://127.0.0.1:{port}/hello.txt", "-o", str(tmp_path),
        "--ca", str(pki.ca),
    )  # fmt: skip
    assert result.returncode == 2
    assert "would both be saved as" in one_line(result.stderr)
    assert files_under(tmp_path) == []


def test_error_answers_are_not_saved_unless_asked(pki, port, tmp_path):
    base = f"https://localhost:{port}"
    result = run_cli(
        "get", f"{base}/nope.txt", f"{base}/", f"{base}/hello.txt",
        "-o", str(tmp_path), "--ca", str(pki.ca),
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{base}/nope.txt: status 404" in result.stderr
    assert "--save-errors" in result.stderr
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path) == ["hello.txt"]  # no nope.txt, no index.html
    kept = run_cli(
        "get", f"{base}/nope.txt", "-o", str(tmp_path), "--ca", str(pki.ca),
        "--save-errors",
    )  # fmt: skip
    assert kept.returncode == 1  # still a failure, but the body is kept
    assert (tmp_path / "nope.txt").read_bytes() == b"not found\n"


@pytest.mark.parametrize("stall", [False], ids=["ended-early"])
def test_a_body_shorter_than_its_content_length_is_not_saved(pki, tmp_path, stall):
    server = BadServer(pki, total=100_000, sent=40_000, stall=stall)
    try:
        result = run_cli(
            "get", f"https://localhost:{server.port}/file", "-o", str(tmp_path),
            "--ca", str(pki.ca), "--timeout", "3",
        )  # fmt: skip
    finally:
        server.close()
    assert result.returncode == 1
    assert "content-length" in result.stderr and "Traceback" not in result.stderr
    assert files_under(tmp_path) == []


def test_ctrl_c_leaves_no_partial_file_and_no_traceback(pki, tmp_path):
    server = BadServer(pki, total=1_000_000, sent=300_000, stall=True)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "quicconn", "get",
            f"https://localhost:{server.port}/dir/file.bin", "-o", str(out),
            "--ca", str(pki.ca), "--timeout", "60",
        ],
        stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not any(out.rglob("*.part")):  # the body is arriving
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        server.close()
    assert proc.returncode == 130
    assert "interrupted" in one_line(err)
    assert files_under(out) == []


# -- many servers, exit status -------------------------------------------------------


def test_a_dead_server_is_reported_and_the_others_are_still_fetched(
    pki, port, tmp_path
):
    dead = free_udp_port()
    result = run_cli(
        "get", f"https://localhost:{dead}/a.txt", f"https://localhost:{port}/hello.txt",
        "-o", str(tmp_path), "--ca", str(pki.ca), "--timeout", "2",
    )  # fmt: skip
    assert result.returncode == 1
    assert f"localhost:{dead}" in result.stderr
    assert "1/2 URLs fetched, 1 failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path) == ["hello.txt"]


# -- stdout ----------------------------------------------------------------------


MEASURE = """
import resource, sys
from quicconn.cli import main
code = main(sys.argv[1:])
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def peak_rss_kib(args: list[str], stdout_path: Path, cwd: Path) -> int:
    with open(stdout_path, "wb") as sink:
        result = subprocess.run(
            [sys.executable, "-c", MEASURE, *args],
            stdout=sink, stderr=subprocess.PIPE, text=True, env=ENV,
            timeout=120, cwd=cwd,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return int(result.stderr.rsplit("MAXRSS", 1)[1])


def test_dash_o_dash_streams_to_stdout_without_holding_the_body(
    pki, port, www, tmp_path
):
    args = ["get", "-q", "--ca", str(pki.ca), "-o", "-"]
    small = peak_rss_kib(
        [*args, f"https://localhost:{port}/small.bin"], tmp_path / "small", tmp_path
    )
    big = peak_rss_kib(
        [*args, f"https://localhost:{port}/big.bin"], tmp_path / "big", tmp_path
    )
    data = (tmp_path / "big").read_bytes()
    assert (
        hashlib.sha256(data).digest()
        == hashlib.sha256((www / "big.bin").read_bytes()).digest()
    )
    # The 30 MB body passed through: it was never held (main held it twice).
    assert big - small < 12 * 1024, (small, big)
    assert not (tmp_path / "-").exists()


# -- progress, options, version ------------------------------------------------------


def test_the_progress_bar_knows_the_total_and_the_time_left(pki, port, tmp_path):
    controller, terminal = pty.openpty()
    # A terminal 120 columns wide (a new pty has none, and tqdm fits its bar).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "quicconn", "get",
            f"https://localhost:{port}/random.bin", "-o", str(tmp_path),
            "--ca", str(pki.ca),
        ],
        stderr=terminal, stdout=subprocess.DEVNULL, env=ENV,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
        proc.wait(30)
    text = shown.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "100%" in text and "1.50M/1.50M" in text, text
    assert "<00:00" in text  # the ETA column


def test_verbose_works_after_the_subcommand_and_version_is_there(pki, port):
    result = run_cli(
        "get", f"https://localhost:{port}/hello.txt", "--ca", str(pki.ca), "-v"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello at the top\n"
    version = run_cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"quicconn {quicconn.__version__}"


def test_every_serve_option_has_help() -> None:
    parser = build_parser()
    commands = next(
        a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"
    )
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"


# -- one-line errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://localhost:abc/x", "'abc' is not a port"),
        ("https://localhost:99999/x", "'99999' is not a port"),
        ("https://localhost:0/x", "'0' is not a port"),
        ("https://::1:4433/x", "put an IPv6 address in brackets"),
        ("http://localhost/x", "not an https:// URL"),
    ],
)
def test_bad_urls_are_one_line_usage_errors(url, shown, tmp_path):
    result = run_cli("get", url, "-o", str(tmp_path))
    assert result.returncode == 2
    assert shown in one_line(result.stderr)


def test_an_unknown_host_is_one_line(tmp_path):
    result = run_cli("get", "https://no-such-host.invalid/x", "-o", str(tmp_path))
    assert result.returncode == 1
    assert "cannot resolve 'no-such-host.invalid'" in one_line(result.stderr)


def test_serve_errors_are_one_line_with_what_to_do(pki, other_pki, www, tmp_path):
    cert = ["--cert", str(pki.cert), "--key", str(pki.key)]
    cases = [
        (["--cert", str(tmp_path / "missing.pem")], 1, "no such file"),
        (["--cert", str(pki.cert), "--key", str(other_pki.key)], 1, "does not match"),
        ([*cert, "--host", "no-such-host.invalid"], 1, "cannot listen on --host"),
        ([*cert, "--host", "192.0.2.1"], 1, "not an address of this machine"),
        ([*cert, "--port", "70000"], 2, "70000 is not a port"),
        ([*cert, "--port", "abc"], 2, "'abc' is not a port number"),
    ]
    for extra, code, shown in cases:
        result = run_cli("serve", str(www), *extra, timeout=30)
        assert result.returncode == code, (extra, result.stderr)
        line = result.stderr.strip().splitlines()[-1]
        assert shown in line, (extra, result.stderr)
        assert "Traceback" not in result.stderr, extra
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        result = run_cli("serve", str(www), *cert, "--port", str(taken), timeout=30)
    assert result.returncode == 1
    assert "already in use" in one_line(result.stderr)
    assert "--port" in result.stderr
    # -v shows the traceback behind the line.
    verbose = run_cli("serve", str(www), "--cert", str(tmp_path / "x.pem"), "-v")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


# -- serve ------------------------------------------------------------------------


def start_serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "quicconn", "serve", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stderr is not None
    while True:
        line = proc.stderr.readline()
        assert line, "serve exited before serving"
        if line.startswith("serving"):
            return proc, line.split(" on ", 1)[1].split()[0]


def test_the_ipv6_url_serve_prints_can_be_pasted_back(pki, www, tmp_path):
    proc, url = start_serve(
        str(www), "--host", "::1", "--port", "0",
        "--cert", str(pki.cert), "--key", str(pki.key),
    )  # fmt: skip
    try:
        assert url.startswith("https://[::1]:")
        result = run_cli("get", url + "hello.txt", "--ca", str(pki.ca))
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello at the top\n"


def test_sigterm_finishes_the_qlogs_and_prints_the_summary(pki, www, tmp_path):
    qlogs = tmp_path / "qlog"
    proc, url = start_serve(
        str(www), "--port", "0", "--qlog-dir", str(qlogs),
        "--cert", str(pki.cert), "--key", str(pki.key),
    )  # fmt: skip
    port = int(url.rsplit(":", 1)[1].strip("/"))
    client = quicconn.http.HttpClient(
        "localhost", port, quicconn.http.ClientOptions(cafile=str(pki.ca))
    )
    try:
        (download,) = client.fetch(["/hello.txt"])  # the connection stays open
        assert download.ok
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        client.close(timeout=0.5)
    assert proc.returncode == 0
    assert "served 1 connections, 1 requests" in err and "SIGTERM" in err
    traces = list(qlogs.glob("*.qlog"))
    assert len(traces) == 1
    trace = json.loads(traces[0].read_text())  # complete: it parses
    events = [e for t in trace["traces"] for e in t["events"]]
    assert any(e["name"].endswith("connection_closed") for e in events) or events


def test_serve_keeps_its_generated_certificate_in_pki_dir(www, tmp_path):
    pki_dir = tmp_path / "pki"
    proc, url = start_serve(str(www), "--port", "0", "--pki-dir", str(pki_dir))
    try:
        result = run_cli(
            "get", url.replace("127.0.0.1", "localhost") + "hello.txt",
            "--ca", str(pki_dir / "ca.pem"),
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello at the top\n"


def test_serve_with_workers_reports_each_workers_share_when_stopped(pki, www, tmp_path):
    keys = tmp_path / "keys.json"
    proc, url = start_serve(
        str(www), "--port", "0", "--workers", "2", "--server-id", "0a0b",
        "--keys-file", str(keys), "--cert", str(pki.cert), "--key", str(pki.key),
    )  # fmt: skip
    port = int(url.rsplit(":", 1)[1].strip("/"))
    clients = []
    try:
        for _ in range(6):
            client = quicconn.http.HttpClient(
                "localhost", port, quicconn.http.ClientOptions(cafile=str(pki.ca))
            )
            clients.append(client)
            (download,) = client.fetch(["/hello.txt"])  # the connection stays open
            assert download.ok
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        for client in clients:
            client.close(timeout=0.5)
    assert proc.returncode == 0, err
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("served 6 connections (") and "6 requests" in summary
    per_worker = summary.split("(", 1)[1].split(" per worker")[0].split(", ")
    assert len(per_worker) == 2 and sum(map(int, per_worker)) == 6
    assert "with 2 workers" in summary and "SIGTERM" in summary
    assert quicconn.scale.ServerKeys.load(keys)  # made, and kept for next time


def test_serve_worker_options_are_checked(www):
    cases = [
        (["--workers", "0"], "0 workers: choose 1-255"),
        (["--workers", "2", "--server-id", "zz"], "'zz' is not hex"),
        (["--server-id", "01"], "are for --workers"),
    ]
    for extra, shown in cases:
        result = run_cli("serve", str(www), *extra, timeout=30)
        assert result.returncode == 2, (extra, result.stderr)
        assert shown in result.stderr.strip().splitlines()[-1], (extra, result.stderr)
