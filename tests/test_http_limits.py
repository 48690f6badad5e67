"""What the HTTP layer holds a peer to (issue 16): streams released after
every kind of answer, field sections bounded before they are buffered,
malformed requests refused per stream, hq-interop request lines bounded.

Every test runs on each core (the ``each_core`` fixture)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pylsqpack
import pytest

import quicconn
from quicconn.http import (
    ClientOptions,
    FileServer,
    H3Session,
    HttpClient,
    HttpLimits,
    RequestError,
    ResponseReceived,
    ServerLimits,
    StreamAborted,
    StreamRefused,
)
from quicconn.http._frames import FrameScanner, Verdict
from tests.support.certs import CertFiles

pytestmark = pytest.mark.usefixtures("each_core")

H3_EXCESSIVE_LOAD = 0x107
H3_REQUEST_REJECTED = 0x10B
H3_MESSAGE_ERROR = 0x10E
SETTINGS_MAX_FIELD_SECTION_SIZE = 0x6


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("limits-www")
    (root / "hello.txt").write_bytes(b"hello\n")
    (root / "empty.txt").write_bytes(b"")
    return root


@contextmanager
def file_server(
    pki: CertFiles, root: Path, limits: ServerLimits | None = None
) -> Iterator[tuple[int, FileServer]]:
    listener = quicconn.listen(
        ("127.0.0.1", 0), str(pki.cert), str(pki.key), alpn=["h3", "hq-interop"]
    )
    server = FileServer(listener, root, limits)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve_forever, args=(stop,), daemon=True)
    thread.start()
    try:
        yield listener.local_address()[1], server
    finally:
        stop.set()
        thread.join(5)
        server.close()
        listener.free()


def client(pki: CertFiles, port: int, alpn: str = "h3") -> HttpClient:
    options = ClientOptions(alpn=alpn, cafile=str(pki.ca), stall_timeout=5)
    return HttpClient("localhost", port, options)


def h3_session(pki: CertFiles, port: int) -> H3Session:
    """A raw HTTP/3 session: requests are written frame by frame."""
    conn = quicconn.connect("127.0.0.1", port, alpn=["h3"], cafile=str(pki.ca))
    conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
    return H3Session(conn)


def varint(value: int) -> bytes:
    for length, prefix in ((1, 0), (2, 0x40), (4, 0x80), (8, 0xC0)):
        if value < 1 << (8 * length - 2):
            return (value | prefix << (8 * length - 8)).to_bytes(length, "big")
    raise ValueError(value)


def headers_frame(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A HEADERS frame QPACK-encoded without the dynamic table."""
    _, block = pylsqpack.Encoder().encode(0, headers)
    return varint(0x1) + varint(len(block)) + block


def request_head(path: bytes = b"/hello.txt") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"localhost"),
        (b":path", path),
    ]


def wait_for(session: H3Session, stream_id: int, limit: float = 5.0) -> list[object]:
    """Drive the session until something happens on ``stream_id``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        got = [e for e in session.handle_events() if e.stream_id == stream_id]
        if got:
            return got
        session.wait(0.05)
    raise AssertionError(f"nothing happened on stream {stream_id} in {limit} s")


# -- streams come back after every kind of answer (issue 16, item 3) ---------


@pytest.mark.parametrize("alpn", ["h3", "hq-interop"])
@pytest.mark.parametrize("kind", ["not-found", "empty-file", "HEAD"])
def test_more_bodiless_answers_than_the_stream_limit_on_one_connection(
    pki: CertFiles, www: Path, alpn: str, kind: str
) -> None:
    """404s, empty files and HEAD answers release their streams, so MAX_STREAMS
    credit comes back: 300 of them on one connection (the limit is 128)."""
    if kind == "HEAD" and alpn == "hq-interop":
        pytest.skip("hq-interop has only GET")
    with file_server(pki, www) as (port, _), client(pki, port, alpn) as http:
        for _ in range(300):
            if kind == "HEAD":
                with http.request("HEAD", "/hello.txt", timeout=5) as response:
                    assert response.status == 200 and response.read() == b""
                    assert response.content_length == len(b"hello\n")
                continue
            path = "/missing.txt" if kind == "not-found" else "/empty.txt"
            (download,) = http.fetch([path])
            assert download.done, download.error
            assert download.ok == (kind == "empty-file")
        assert http.conn.get_conn_close_info() is None


def test_rejected_hq_request_lines_release_their_streams(
    pki: CertFiles, www: Path
) -> None:
    """An hq-interop request line over the limit resets that stream only; its
    buffer and its stream are released (200 of them on one connection)."""
    limits = ServerLimits(http=HttpLimits(max_request_line=1024))
    with file_server(pki, www, limits) as (port, server):
        conn = quicconn.connect(
            "127.0.0.1", port, alpn=["hq-interop"], cafile=str(pki.ca)
        )
        conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
        with conn:
            for _ in range(200):
                stream = conn.new_stream()
                stream.write_ex2(b"GET /" + b"a" * 2000, 0)  # no newline yet
                with pytest.raises(quicconn.StreamResetError) as reset:
                    stream.read()
                assert reset.value.error_code == H3_REQUEST_REJECTED
                stream.free()
            stream = conn.new_stream()
            stream.write_ex2(b"GET /hello.txt\r\n", quicconn.WRITE_FLAG_CONCLUDE)
            assert stream.read() == b"hello\n"
        assert server.stats.requests == 1


# -- field sections (issue 16, item 1) -----------------------------------------


def test_the_field_section_limit_is_announced_in_settings(
    pki: CertFiles, www: Path
) -> None:
    limits = ServerLimits(http=HttpLimits(max_field_section_size=4096))
    with file_server(pki, www, limits) as (port, _):
        session = h3_session(pki, port)
        deadline = time.monotonic() + 5
        while session.peer_settings is None and time.monotonic() < deadline:
            session.handle_events()
            session.wait(0.05)
        assert session.peer_settings is not None
        assert session.peer_settings[SETTINGS_MAX_FIELD_SECTION_SIZE] == 4096
        session.conn.free()


def test_a_headers_frame_declaring_2_to_the_40_bytes_gets_431_unbuffered(
    pki: CertFiles, www: Path
) -> None:
    """The frame header alone decides: the server answers 431 and stops
    reading after a few bytes of payload, without waiting for (or keeping)
    the rest; the connection and other requests go on."""
    with file_server(pki, www) as (port, _):
        session = h3_session(pki, port)
        attack = session.open_stream()
        attack.write(varint(0x1) + varint(2**40) + b"\x00" * 100)
        events = wait_for(session, attack.get_stream_id())
        assert isinstance(events[0], ResponseReceived) and events[0].status == 431
        # The server stopped reading: our next writes are refused.
        deadline = time.monotonic() + 5
        with pytest.raises(quicconn.StreamResetError) as stopped:
            while time.monotonic() < deadline:
                attack.write(b"\x00" * 65536)
                session.handle_events()
                session.wait(0.02)
        assert stopped.value.error_code == H3_EXCESSIVE_LOAD
        # The connection lives on.
        ok = session.send_request("GET", "localhost", "/hello.txt")
        events = wait_for(session, ok)
        assert isinstance(events[0], ResponseReceived) and events[0].status == 200
        session.conn.free()


def test_too_many_header_fields_get_431(pki: CertFiles, www: Path) -> None:
    with file_server(pki, www) as (port, server), client(pki, port) as http:
        many = [(f"x-field-{i}".encode(), b"1") for i in range(200)]
        with http.request("GET", "/hello.txt", headers=many, timeout=5) as response:
            assert response.status == 431
        few = many[:50]
        with http.request("GET", "/hello.txt", headers=few, timeout=5) as response:
            assert response.status == 200 and response.read() == b"hello\n"
        assert server.stats.requests == 1  # the refused one never reached it


def test_a_section_over_a_configured_limit_gets_431(pki: CertFiles, www: Path) -> None:
    limits = ServerLimits(http=HttpLimits(max_field_section_size=1024))
    with file_server(pki, www, limits) as (port, _), client(pki, port) as http:
        big = [(b"x-big", b"v" * 2000)]
        with http.request("GET", "/hello.txt", headers=big, timeout=5) as response:
            assert response.status == 431
        # Under the limit encoded, but over it in RFC 9114's measure (32 bytes
        # of overhead per field): refused after decoding.
        fields = [(f"x-{i}".encode(), b"") for i in range(30)]
        with http.request("GET", "/hello.txt", headers=fields, timeout=5) as response:
            assert response.status == 431


def test_a_client_refuses_a_response_section_over_its_limit(
    pki: CertFiles, www: Path
) -> None:
    """A client holds a server to its limits too: the request fails with
    H3_EXCESSIVE_LOAD and the connection goes on."""
    with file_server(pki, www) as (port, _):
        conn = quicconn.connect("127.0.0.1", port, alpn=["h3"], cafile=str(pki.ca))
        conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
        session = H3Session(conn, HttpLimits(max_header_fields=2))
        first = session.send_request("GET", "localhost", "/hello.txt")
        events = wait_for(session, first)
        # :status, server, content-length: three fields
        refused = events[0]
        assert isinstance(refused, StreamRefused)
        assert refused.error_code == H3_EXCESSIVE_LOAD
        assert conn.get_conn_close_info() is None
        conn.free()


# -- malformed requests are stream errors (issue 16, item 11) ------------------


@pytest.mark.parametrize(
    "head",
    [
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost")],
        [(b":method", b"GET"), (b":authority", b"localhost"), (b":path", b"/")],
        [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", b""),
        ],
        [*request_head(), (b"Upper-Case", b"x")],
        [*request_head(), (b"connection", b"close")],
        [*request_head(), (b"content-length", b"10")],
    ],
    ids=[
        "no-path",
        "no-scheme",
        "empty-path",
        "uppercase-name",
        "connection-field",
        "content-length-without-body",
    ],
)
def test_a_malformed_request_resets_its_stream_only(
    pki: CertFiles, www: Path, head: list[tuple[bytes, bytes]]
) -> None:
    """RFC 9114 section 4.1.2: a stream error H3_MESSAGE_ERROR, not a
    connection close; the next request on the connection is served."""
    with file_server(pki, www) as (port, server):
        session = h3_session(pki, port)
        bad = session.open_stream()
        bad.write_ex2(headers_frame(head), quicconn.WRITE_FLAG_CONCLUDE)
        events = wait_for(session, bad.get_stream_id())
        assert isinstance(events[0], StreamAborted)
        assert events[0].error_code == H3_MESSAGE_ERROR
        assert session.conn.get_conn_close_info() is None
        good = session.send_request("GET", "localhost", "/hello.txt")
        events = wait_for(session, good)
        assert isinstance(events[0], ResponseReceived) and events[0].status == 200
        assert server.stats.requests == 1
        session.conn.free()


def test_a_request_error_names_the_stream_error(pki: CertFiles, www: Path) -> None:
    with file_server(pki, www) as (port, _), client(pki, port) as http:
        with pytest.raises(RequestError) as failed:
            http.request("GET", "/hello.txt", headers=[(b"te", b"gzip")], timeout=5)
        assert failed.value.error_code == H3_MESSAGE_ERROR


# -- the frame scanner itself -------------------------------------------------------


def test_the_scanner_keeps_nothing_of_an_oversized_frame() -> None:
    scanner = FrameScanner("request", 65536)
    assert scanner.scan(varint(0x1) + varint(2**40), False) is None
    assert scanner.verdict is Verdict.TOO_LARGE
    for _ in range(100):
        assert scanner.scan(b"\x00" * 65536, False) is None


def test_the_scanner_drops_unknown_frames_as_they_arrive() -> None:
    """A reserved frame type (0x21) of 2^40 bytes never reaches the codec,
    which on the qh3 core would buffer it whole."""
    scanner = FrameScanner("request", 65536)
    assert scanner.scan(varint(0x21) + varint(2**40) + b"x" * 1000, False) is None
    for _ in range(10):
        assert scanner.scan(b"x" * 65536, False) is None
    assert scanner.verdict is None


@pytest.mark.parametrize("split", [1, 2, 3, 5, 1000])
def test_the_scanner_passes_known_frames_whole_in_any_split(split: int) -> None:
    head = headers_frame(request_head())
    body = varint(0x0) + varint(4) + b"body"
    unknown = varint(0x21) + varint(3) + b"xyz"
    wire = unknown + head + unknown + body
    scanner = FrameScanner("request", 65536)
    out = []
    for i in range(0, len(wire), split):
        piece = scanner.scan(wire[i : i + split], i + split >= len(wire))
        if piece is not None:
            out.append(piece)
    assert b"".join(p.data for p in out) == head + body
    assert out[-1].fin and not any(p.fin for p in out[:-1])


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (varint(0x4) + varint(2) + b"\x06\x01", 0x105),  # SETTINGS on a request stream
        (varint(0x2) + varint(0), 0x105),  # a reserved HTTP/2 type
        (varint(0x21) + varint(10) + b"abc", 0x106),  # truncated by the FIN
    ],
    ids=["settings", "http2-priority", "truncated-unknown"],
)
def test_the_scanner_reports_connection_errors(wire: bytes, code: int) -> None:
    scanner = FrameScanner("request", 65536)
    scanner.scan(wire, True)
    assert scanner.verdict is Verdict.CONNECTION_ERROR
    assert scanner.error[0] == code


def test_the_control_stream_bounds_its_frames() -> None:
    scanner = FrameScanner("uni", 65536)
    scanner.scan(varint(0x0) + varint(0x4) + varint(2**30), False)
    assert scanner.verdict is Verdict.CONNECTION_ERROR
    assert scanner.error[0] == H3_EXCESSIVE_LOAD
    scanner = FrameScanner("uni", 65536)
    settings = varint(0x4) + varint(0)
    scanner.scan(varint(0x0) + settings + varint(0x7) + varint(2**20), False)
    assert scanner.error[0] == 0x106  # GOAWAY holds one integer: 8 bytes at most
    scanner = FrameScanner("uni", 65536)
    scanner.scan(varint(0x0) + varint(0x7) + varint(1) + b"\x00", False)
    assert scanner.error[0] == 0x10A  # H3_MISSING_SETTINGS


def test_a_field_section_that_waits_for_the_encoder_stream_is_refused(
    pki: CertFiles, www: Path
) -> None:
    """Both cores announce SETTINGS_QPACK_BLOCKED_STREAMS 0 (the aioquic one
    also a dynamic table of 0 bytes): a field section that refers to entries
    not yet received would make the codec buffer what follows it (or, held
    back in QUIC's buffers, fill the connection window the encoder stream
    needs).  A peer that sends one anyway gets a QPACK connection error at
    once, however much body it sends after it."""
    with file_server(pki, www) as (port, _):
        conn = quicconn.connect("127.0.0.1", port, alpn=["h3"], cafile=str(pki.ca))
        conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
        control = conn.new_stream(quicconn.STREAM_FLAG_UNI)
        control.write(varint(0x0) + varint(0x4) + varint(0))  # empty SETTINGS
        encoder = pylsqpack.Encoder()
        encoder_stream = conn.new_stream(quicconn.STREAM_FLAG_UNI)
        # A dynamic table the server did not offer room for blocked streams.
        encoder_stream.write(varint(0x2) + encoder.apply_settings(4096, 16))
        head = [*request_head(), (b"x-custom", b"v" * 100)]
        first = conn.new_stream()
        _, block = encoder.encode(first.get_stream_id(), head)  # no insert yet
        first.write_ex2(varint(0x1) + varint(len(block)) + block, 0)
        second = conn.new_stream()
        inserts, block = encoder.encode(second.get_stream_id(), head)
        assert inserts  # the second use inserts: withheld, so it blocks
        second.write(varint(0x1) + varint(len(block)) + block)
        conn.set_blocking_mode(False)
        body = varint(0x0) + varint(60000) + bytes(60000)
        deadline = time.monotonic() + 5
        while conn.get_conn_close_info() is None and time.monotonic() < deadline:
            with suppress(quicconn.Error):
                second.write(body)
            conn.handle_events()
            time.sleep(0.01)
        info = conn.get_conn_close_info()
        assert info is not None and not info.is_local
        # QPACK_DECOMPRESSION_FAILED (qh3: blocked streams 0), or
        # QPACK_ENCODER_STREAM_ERROR (aioquic: no dynamic table at all).
        assert info.error_code in (0x200, 0x201)
        conn.free()


# -- send buffers follow the peer's credit (issue 16, item 2) ------------------


@contextmanager
def stream_pair(
    pki: CertFiles, streams: int, client_options: dict[str, int], server_ctx_setup=None
) -> Iterator[tuple[quicconn.Connection, list[quicconn.Stream]]]:
    """A client that opened ``streams`` streams (one byte each) and the
    server's side of them, nonblocking with partial writes."""
    ctx = quicconn.Context(quicconn.SERVER)
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protos(["quicconn-test"])
    if server_ctx_setup is not None:
        server_ctx_setup(ctx)
    with ctx.new_listener(("127.0.0.1", 0)) as listener:
        port = listener.local_address()[1]
        accepted_conn: list[quicconn.Connection | None] = []
        acceptor = threading.Thread(
            target=lambda: accepted_conn.append(listener.accept_connection())
        )
        acceptor.start()
        conn = quicconn.connect(
            "127.0.0.1",
            port,
            alpn=["quicconn-test"],
            cafile=str(pki.ca),
            **client_options,
        )
        acceptor.join(10)
        (server,) = accepted_conn
        assert server is not None
        conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
        for _ in range(streams):
            conn.new_stream().write(b"?")
        server.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
        server.set_incoming_stream_policy(quicconn.INCOMING_STREAM_POLICY_ACCEPT)
        server.set_blocking_mode(False)
        server.set_mode(quicconn.MODE_ENABLE_PARTIAL_WRITE)
        accepted: list[quicconn.Stream] = []
        deadline = time.monotonic() + 5
        while len(accepted) < streams and time.monotonic() < deadline:
            conn.handle_events()
            listener.handle_events()
            stream = server.accept_stream(quicconn.ACCEPT_STREAM_NO_BLOCK)
            if stream is not None:
                accepted.append(stream)
        assert len(accepted) == streams
        try:
            yield conn, accepted
        finally:
            server.free()
            conn.free()


def write_all_they_take(
    streams: list[quicconn.Stream], tick: object = None, rounds: int = 20
) -> int:
    """Write 1 MiB chunks on every stream until none takes more; the total."""
    total = 0
    chunk = bytes(1024 * 1024)
    for _ in range(rounds):
        for stream in streams:
            with suppress(quicconn.WantWriteError):
                total += stream.write(chunk)
        if callable(tick):
            tick()
        time.sleep(0.01)
    return total


def test_writes_stop_at_the_peers_connection_credit(pki: CertFiles) -> None:
    """A peer that reads nothing, with 64 KiB of connection credit (MAX_DATA)
    and 1 MiB per stream, gets about its connection credit buffered for it,
    not 1 MiB per stream (20 MiB here).  (A qh3 client grants up to about
    twice its max_data while it holds data unread: docs/cores.md.)"""
    with stream_pair(pki, 20, {"max_data": 64 * 1024}) as (client, streams):
        total = write_all_they_take(streams, client.handle_events)
    assert 0 < total <= 4 * 64 * 1024


def test_writes_stop_at_the_connections_send_buffer(pki: CertFiles) -> None:
    """A peer granting plenty of credit but acknowledging nothing (it never
    runs) is held to ``connection_write_buffer_size`` over all streams."""

    def small_buffer(ctx: quicconn.Context) -> None:
        ctx.connection_write_buffer_size = 256 * 1024

    with stream_pair(pki, 20, {"max_data": 64 * 1024 * 1024}, small_buffer) as (
        _,
        streams,
    ):
        total = write_all_they_take(streams)
    assert 0 < total <= 256 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("big-www")
    (root / "big.bin").write_bytes(bytes(4 * 1024 * 1024))
    return root


def starving_client(pki: CertFiles, port: int, requests: int) -> H3Session:
    """Opens ``requests`` requests for a 4 MB file and never reads any: it
    grants no connection credit beyond its first 256 KiB."""
    conn = quicconn.connect(
        "127.0.0.1", port, alpn=["h3"], cafile=str(pki.ca), max_data=256 * 1024
    )
    conn.set_default_stream_mode(quicconn.DEFAULT_STREAM_MODE_NONE)
    session = H3Session(conn)
    for _ in range(requests):
        session.pause_reading(session.send_request("GET", "localhost", "/big.bin"))
    return session


def starve(sessions: list[H3Session], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for session in sessions:
            session.handle_events()
        time.sleep(0.01)


def test_a_credit_starving_reader_holds_little_server_memory(
    pki: CertFiles, big_file: Path
) -> None:
    """100 requests, no connection credit granted: the server holds about
    the client's 256 KiB of credit for it (it held 1 MiB per stream, about
    100 MiB, before), and still serves others."""
    with file_server(pki, big_file) as (port, server):
        session = starving_client(pki, port, 100)
        starve([session], 2.0)
        assert server.buffered() <= 256 * 1024 + 64 * 1024
        with client(pki, port) as http:
            (download,) = http.fetch(["/big.bin"])
            assert download.ok and len(download.body) == 4 * 1024 * 1024
        session.conn.free()


def test_the_servers_memory_for_responses_is_capped(
    pki: CertFiles, big_file: Path
) -> None:
    """Four starving connections, each allowed 256 KiB: the server stops
    reading files at its ``max_memory`` (here 512 KiB) over all of them."""
    limits = ServerLimits(max_memory=512 * 1024)
    with file_server(pki, big_file, limits) as (port, server):
        sessions = [starving_client(pki, port, 20) for _ in range(4)]
        starve(sessions, 2.0)
        assert server.buffered() <= 512 * 1024 + 64 * 1024
        for session in sessions:
            session.conn.free()
