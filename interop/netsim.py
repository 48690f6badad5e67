"""A userspace network simulator: a UDP relay that impairs traffic on loopback.

The QUIC interop runner puts an ns-3 simulated link between client and
server (quic-network-simulator).  The kernel here has no netem and Docker
cannot run, so this relay reproduces that link in userspace::

    client ---> [listen socket] relay [upstream socket(s)] ---> server
           <---                                            <---

Each direction is a :class:`Pipe`, modelled like ns-3's point-to-point link:

1. MTU: a datagram whose IP packet (payload + 28 bytes for IPv4, 48 for
   IPv6) exceeds ``mtu`` is dropped;
2. a drop-tail queue of ``queue`` packets waits for the transmitter (the
   packet being transmitted does not count), full -> dropped;
3. serialisation at ``bandwidth`` bits/s of the IP packet size;
4. ``delay`` seconds of propagation;
5. at the far end, the impairment policy
   (:class:`quicconn.testing.Impairment`: droplist, blackhole windows,
   random drop and corruption with burst caps) decides its fate, as ns-3's
   receive error models do.

Towards the server the relay behaves like a NAT: each client address gets
its own upstream socket, and a *rebind* gives every client a new source
port (and, with ``rebind_addresses``, a new 127.x.y.z source address) from
then on.  Datagrams the server still sends to a retired binding are dropped
(fate ``unbound``), as ns-3's rebind scenario does.

Everything is logged as JSON-able records (``t``, ``dir``, ``n``, ``size``,
``fate``, ...), and every random choice comes from generators seeded from
one ``seed``, one per direction, so a run is reproducible.

In-process use::

    with NetSim(NetSimConfig(server=("127.0.0.1", 4433), seed=1)) as sim:
        connect_to(sim.address)  # the client talks to the relay
    sim.records()  # what happened to every datagram

From the shell: ``python -m interop.netsim --listen 127.0.0.1:0 --server
127.0.0.1:4433 --delay 15ms --bandwidth 10Mbps --queue 25 --drop-to-server 5``
prints ``READY <host> <port>`` and relays until interrupted (or
``--duration``).  ``--scenario "drop-rate --delay=15ms ..."`` takes the
interop runner's scenario strings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import math
import os
import random
import re
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from quicconn.testing import Fate, Impairment, ImpairmentSpec

from .pcap import PcapWriter

__all__ = [
    "LinkSpec",
    "NetSim",
    "NetSimConfig",
    "NetSimProcess",
    "Pipe",
    "config_from_scenario",
    "main",
]

Address = tuple[str, int]
Record = dict[str, Any]

TO_SERVER = "to_server"
TO_CLIENT = "to_client"

#: The interop runner's link: 15 ms one way, 10 Mbit/s, 25 packets, MTU 1500.
DEFAULT_DELAY = 0.015
DEFAULT_BANDWIDTH = 10_000_000
DEFAULT_QUEUE = 25
DEFAULT_MTU = 1500

_IPV4_UDP_OVERHEAD = 20 + 8
_IPV6_UDP_OVERHEAD = 40 + 8
_RECV_SIZE = 65535
_RECV_BATCH = 256
_SOCKET_BUFFER = 4 * 1024 * 1024
#: How early a datagram may leave: the sleep granularity (see NetSim._loop).
_EARLY = 0.001


# ----------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------


@dataclass(frozen=True)
class LinkSpec:
    """One direction of the simulated link.

    ``bandwidth`` (bits/s), ``queue`` (packets) and ``mtu`` (bytes of IP
    packet) may be ``None`` for "unlimited"; ``delay`` is one-way, seconds.
    """

    delay: float = DEFAULT_DELAY
    bandwidth: float | None = DEFAULT_BANDWIDTH
    queue: int | None = DEFAULT_QUEUE
    mtu: int | None = DEFAULT_MTU
    impairment: ImpairmentSpec = field(default_factory=ImpairmentSpec)

    def __post_init__(self) -> None:
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {self.delay}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(
                f"bandwidth must be positive (or None), got {self.bandwidth}"
            )
        if self.queue is not None and self.queue < 0:
            raise ValueError(f"queue must be >= 0 packets (or None), got {self.queue}")
        if self.mtu is not None and self.mtu < 68:
            raise ValueError(f"mtu must be at least 68 bytes (or None), got {self.mtu}")


@dataclass(frozen=True)
class NetSimConfig:
    """Where the relay listens and forwards, the two links, rebinding, seed.

    ``rebind_first`` (seconds after start) and ``rebind_every`` schedule NAT
    rebinds; ``rebind_addresses`` changes the source address too (IPv4 only:
    on loopback any 127.0.0.0/8 address is usable).
    """

    server: Address
    listen: Address = ("127.0.0.1", 0)
    to_server: LinkSpec = field(default_factory=LinkSpec)
    to_client: LinkSpec = field(default_factory=LinkSpec)
    rebind_first: float | None = None
    rebind_every: float | None = None
    rebind_addresses: bool = False
    seed: int | str | None = 0
    #: Source address of the upstream sockets before any address rebind
    #: (default: the loopback address of the server's family).
    source_address: str | None = None

    def __post_init__(self) -> None:
        for name, (host, port) in (("server", self.server), ("listen", self.listen)):
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(
                    f"{name} address must be a numeric IP address, got {host!r}"
                ) from None
            if not 0 <= int(port) < 65536:
                raise ValueError(f"{name} port out of range: {port!r}")
        if self.rebind_every is not None and self.rebind_every <= 0:
            raise ValueError("rebind_every must be a positive number of seconds")
        if self.rebind_every is not None and self.rebind_first is None:
            raise ValueError("rebind_every needs rebind_first (the first rebind)")
        if self.rebind_addresses and _family(self.server[0]) == socket.AF_INET6:
            raise ValueError(
                "address rebinding needs an IPv4 server: IPv6 loopback has one address"
            )

    def with_links(self, **changes: Any) -> NetSimConfig:
        """A copy with both links changed alike (``delay=0.005``, ...)."""
        return dataclasses.replace(
            self,
            to_server=dataclasses.replace(self.to_server, **changes),
            to_client=dataclasses.replace(self.to_client, **changes),
        )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# ----------------------------------------------------------------------
# one direction of the link
# ----------------------------------------------------------------------


@dataclass
class _InFlight:
    deliver_at: float
    arrived: float
    number: int
    data: bytes
    peer: Address  # the client this datagram belongs to


class Pipe:
    """One direction: MTU check, drop-tail queue, serialisation, delay, impairment.

    Pure bookkeeping over times the caller passes in; the relay's loop calls
    :meth:`offer` when a datagram arrives and :meth:`due` to collect what is
    ready to leave.  Departures are in arrival order (a FIFO link), so the
    in-flight list is a deque, not a heap.
    """

    def __init__(
        self,
        name: str,
        spec: LinkSpec,
        impairment: Impairment,
        ip_overhead: int,
        log: Callable[[Record], None],
    ) -> None:
        self.name = name
        self.spec = spec
        self.impairment = impairment
        self.ip_overhead = ip_overhead
        self._log = log
        self._in_flight: deque[_InFlight] = deque()
        self._waiting: deque[float] = deque()  # transmission start times
        self._tx_free_at = -math.inf
        self.arrivals = 0

    def offer(self, now: float, data: bytes, peer: Address) -> None:
        """A datagram reached the link at ``now``: queue it or drop it."""
        self.arrivals += 1
        number = self.arrivals
        spec = self.spec
        wire = len(data) + self.ip_overhead
        if spec.mtu is not None and wire > spec.mtu:
            self._record(now, number, len(data), Fate.MTU)
            return
        waiting = self._waiting
        while waiting and waiting[0] <= now:
            waiting.popleft()  # its transmission has begun: it left the queue
        start = max(now, self._tx_free_at)
        if spec.queue is not None and start > now and len(waiting) >= spec.queue:
            self._record(now, number, len(data), Fate.QUEUE_FULL)
            return
        if start > now:
            waiting.append(start)
        serialisation = 0.0 if spec.bandwidth is None else wire * 8.0 / spec.bandwidth
        self._tx_free_at = start + serialisation
        deliver_at = self._tx_free_at + spec.delay
        self._in_flight.append(_InFlight(deliver_at, now, number, data, peer))

    def next_departure(self) -> float | None:
        return self._in_flight[0].deliver_at if self._in_flight else None

    def due(self, now: float, t0: float) -> Iterator[tuple[bytes, Address]]:
        """Datagrams whose delivery time has come, after the impairment policy."""
        in_flight = self._in_flight
        while in_flight and in_flight[0].deliver_at <= now:
            item = in_flight.popleft()
            fate, data = self.impairment.judge(item.deliver_at - t0, item.data)
            self._record(
                item.deliver_at,
                item.number,
                len(item.data),
                fate,
                latency=round(item.deliver_at - item.arrived, 6),
            )
            if fate.delivered:
                yield data, item.peer

    def queued(self) -> int:
        return len(self._in_flight)

    def _record(
        self, when: float, number: int, size: int, fate: Fate, **extra: Any
    ) -> None:
        self._log(
            {"t": when, "dir": self.name, "n": number, "size": size, "fate": fate.value}
            | extra
        )


# ----------------------------------------------------------------------
# the relay
# ----------------------------------------------------------------------


@dataclass
class _Binding:
    """The NAT state for one client: its current upstream socket."""

    client: Address
    sock: socket.socket
    retired: list[socket.socket] = field(default_factory=list)


def _sockname(sock: socket.socket) -> Address:
    host, port = sock.getsockname()[:2]
    return (str(host), int(port))


def _udp_socket(family: socket.AddressFamily, address: Address) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class NetSim:
    """The relay, run on its own thread with its own selector loop.

    ``start()`` binds the listening socket (``address`` is then known) and
    starts the thread; ``stop()`` ends it and closes every socket, raising
    any error the loop hit.  A context manager does both.  ``log_file``
    (a path or an open text file) receives each record as a JSON line.
    """

    def __init__(
        self,
        config: NetSimConfig,
        *,
        log_file: str | os.PathLike[str] | IO[str] | None = None,
        keep_records: bool = True,
        pcap_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config
        #: Captures of each side of the link, as the interop runner takes them
        #: (``trace_node_left.pcap`` at the client, ``..._right`` at the server).
        self._pcap_dir = pcap_dir
        self._left: PcapWriter | None = None
        self._right: PcapWriter | None = None
        self._family = _family(config.server[0])
        overhead = (
            _IPV6_UDP_OVERHEAD
            if self._family == socket.AF_INET6
            else _IPV4_UDP_OVERHEAD
        )
        seed = config.seed
        self.to_server = Pipe(
            TO_SERVER,
            config.to_server,
            Impairment(config.to_server.impairment, seed=f"{seed}/{TO_SERVER}"),
            overhead,
            self._log,
        )
        self.to_client = Pipe(
            TO_CLIENT,
            config.to_client,
            Impairment(config.to_client.impairment, seed=f"{seed}/{TO_CLIENT}"),
            overhead,
            self._log,
        )
        self._rebind_rng = random.Random(f"{seed}/rebind")
        self._source = config.source_address or (
            "::1" if self._family == socket.AF_INET6 else "127.0.0.1"
        )
        self._keep = keep_records
        self._records: list[Record] = []
        self._records_lock = threading.Lock()
        self._log_file: IO[str] | None = None
        self._owns_log_file = False
        if isinstance(log_file, (str, os.PathLike)):
            self._log_file = open(log_file, "w", encoding="utf-8")  # noqa: SIM115
            self._owns_log_file = True
        elif log_file is not None:
            self._log_file = log_file
        self._listen: socket.socket | None = None
        self._bindings: dict[Address, _Binding] = {}
        self._by_upstream: dict[socket.socket, _Binding] = {}
        self._retired: dict[socket.socket, _Binding] = {}
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._running = False
        self._next_rebind: float | None = None
        self.rebinds = 0
        self.error: BaseException | None = None
        self.t0 = 0.0
        self._wall0 = 0.0
        self._listen_address: Address | None = None

    # -- lifecycle --------------------------------------------------------

    @property
    def address(self) -> Address:
        """Where clients send: the relay's listening address."""
        if self._listen_address is None:
            raise RuntimeError("the relay is not started")
        return self._listen_address

    def start(self) -> NetSim:
        if self._thread is not None:
            raise RuntimeError("NetSim.start() called twice")
        listen_family = _family(self.config.listen[0])
        self._listen = _udp_socket(listen_family, self.config.listen)
        self._listen_address = _sockname(self._listen)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listen, selectors.EVENT_READ, "listen")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self._pcap_dir is not None:
            directory = Path(self._pcap_dir)
            directory.mkdir(parents=True, exist_ok=True)
            self._left = PcapWriter(directory / "trace_node_left.pcap")
            self._right = PcapWriter(directory / "trace_node_right.pcap")
        self.t0 = time.monotonic()
        self._wall0 = time.time()
        if self.config.rebind_first is not None:
            self._next_rebind = self.t0 + self.config.rebind_first
        self._running = True
        self._thread = threading.Thread(
            target=self._run, name=f"netsim-{self.address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop, close the sockets; re-raise a failure of the loop."""
        if self._thread is not None:
            self._running = False
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            self._thread.join(timeout=10)
            self._thread = None
        self._close()
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"the network simulator failed: {error!r}") from error

    def __enter__(self) -> NetSim:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _close(self) -> None:
        sockets: list[socket.socket] = []
        if self._listen is not None:
            sockets.append(self._listen)
        for binding in self._bindings.values():
            sockets += [binding.sock, *binding.retired]
        for sock in sockets:
            sock.close()
        self._bindings.clear()
        self._by_upstream.clear()
        self._retired.clear()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._log_file is not None:
            self._log_file.flush()
            if self._owns_log_file:
                self._log_file.close()
            self._log_file = None
        for writer in (self._left, self._right):
            if writer is not None:
                writer.close()

    # -- observation ------------------------------------------------------

    def records(self) -> list[Record]:
        """A copy of every record logged so far (times relative to start)."""
        with self._records_lock:
            return list(self._records)

    def fates(self, direction: str) -> dict[str, int]:
        """How many datagrams of ``direction`` met each fate so far."""
        counts: dict[str, int] = {}
        for record in self.records():
            if record.get("dir") == direction and "fate" in record:
                counts[record["fate"]] = counts.get(record["fate"], 0) + 1
        return counts

    def blackhole(self, on: bool, direction: str | None = None) -> None:
        """Drop everything (one direction, or both) from now until turned off."""
        for pipe in (self.to_server, self.to_client):
            if direction in (None, pipe.name):
                pipe.impairment.forced_blackhole = on

    def upstream_addresses(self) -> list[Address]:
        """The current source address of each client's binding to the server."""
        return [
            (str(b.sock.getsockname()[0]), int(b.sock.getsockname()[1]))
            for b in list(self._bindings.values())
        ]

    def _log(self, record: Record) -> None:
        record["t"] = round(record["t"] - self.t0, 6)
        if self._keep:
            with self._records_lock:
                self._records.append(record)
        if self._log_file is not None:
            self._log_file.write(json.dumps(record) + "\n")

    # -- the loop ---------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        monotonic = time.monotonic
        while self._running:
            now = monotonic()
            deadlines = [
                t
                for t in (
                    self.to_server.next_departure(),
                    self.to_client.next_departure(),
                    self._next_rebind,
                )
                if t is not None
            ]
            # The kernel sleeps in whole milliseconds (rounding up, then timer
            # slack): wake at the last whole millisecond before the deadline
            # and send what is due within _EARLY, so a packet leaves within
            # about half a millisecond of its time on average instead of one
            # millisecond late, and nothing spins.
            timeout = (
                max(0.0, math.floor((min(deadlines) - now) * 1000.0) / 1000.0)
                if deadlines
                else None
            )
            events = selector.select(timeout)
            now = monotonic()
            for key, _ in events:
                tag = key.data
                if tag == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                elif tag == "listen":
                    self._receive_from_clients(now)
                else:
                    self._receive_from_server(key.fileobj, now)  # type: ignore[arg-type]
            horizon = monotonic() + _EARLY
            if self._next_rebind is not None and horizon >= self._next_rebind:
                self._rebind(self._next_rebind)
            self._deliver(horizon)

    def _drain(self, sock: socket.socket) -> list[tuple[bytes, Address]]:
        batch: list[tuple[bytes, Address]] = []
        recvfrom = sock.recvfrom
        for _ in range(_RECV_BATCH):
            try:
                data, addr = recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue  # ICMP for an earlier send; the datagram was lost
            batch.append((data, (str(addr[0]), int(addr[1]))))
        return batch

    def _receive_from_clients(self, now: float) -> None:
        assert self._listen is not None
        for data, client in self._drain(self._listen):
            if client not in self._bindings:
                self._bind(client, now)
            if self._left is not None:
                self._left.write(self._wall(now), client, self.address, data)
            self.to_server.offer(now, data, client)

    def _receive_from_server(self, sock: socket.socket, now: float) -> None:
        binding = self._by_upstream.get(sock)
        retired = binding is None
        if retired:
            binding = self._retired.get(sock)
        batch = self._drain(sock)
        if binding is None:
            return
        for data, source in batch:
            if source != self._server_address():
                continue  # not from the server: a stray, not part of the link
            if self._right is not None:
                self._right.write(self._wall(now), source, _sockname(sock), data)
            if retired:
                self.to_client.arrivals += 1
                self._log(
                    {
                        "t": now,
                        "dir": TO_CLIENT,
                        "n": self.to_client.arrivals,
                        "size": len(data),
                        "fate": Fate.UNBOUND.value,
                    }
                )
                continue
            self.to_client.offer(now, data, binding.client)

    def _server_address(self) -> Address:
        host, port = self.config.server
        return (str(ipaddress.ip_address(host)), int(port))

    def _deliver(self, now: float) -> None:
        assert self._listen is not None
        server = self.config.server
        for data, client in self.to_server.due(now, self.t0):
            binding = self._bindings.get(client)
            if binding is not None:
                if self._right is not None:
                    self._right.write(
                        self._wall(now), _sockname(binding.sock), server, data
                    )
                self._send(binding.sock, data, server)
        for data, client in self.to_client.due(now, self.t0):
            if self._left is not None:
                self._left.write(self._wall(now), self.address, client, data)
            self._send(self._listen, data, client)

    def _wall(self, now: float) -> float:
        return self._wall0 + (now - self.t0)

    def _send(self, sock: socket.socket, data: bytes, address: Address) -> None:
        try:
            sock.sendto(data, address)
        except OSError as exc:
            # A full socket buffer or an unreachable port: the datagram is lost
            # after all, as on a real link.  Recorded, never fatal.
            self._log({"t": time.monotonic(), "event": "send-error", "error": str(exc)})

    # -- NAT --------------------------------------------------------------

    def _bind(self, client: Address, now: float) -> None:
        sock = _udp_socket(self._family, (self._source, 0))
        binding = _Binding(client, sock)
        self._bindings[client] = binding
        self._by_upstream[sock] = binding
        assert self._selector is not None
        self._selector.register(sock, selectors.EVENT_READ, "upstream")
        self._log(
            {
                "t": now,
                "event": "bind",
                "client": list(client),
                "upstream": list(sock.getsockname()[:2]),
            }
        )

    def _rebind(self, now: float) -> None:
        config = self.config
        if config.rebind_addresses:
            # Like ns-3's rebind scenario: a new last octet, never the old one.
            old = self._source
            prefix = old.rsplit(".", 1)[0]
            while self._source == old:
                self._source = f"{prefix}.{self._rebind_rng.randrange(1, 255)}"
        assert self._selector is not None
        for binding in list(self._bindings.values()):
            old_sock = binding.sock
            new_sock = _udp_socket(self._family, (self._source, 0))
            binding.retired.append(old_sock)
            del self._by_upstream[old_sock]
            self._retired[old_sock] = binding
            binding.sock = new_sock
            self._by_upstream[new_sock] = binding
            self._selector.register(new_sock, selectors.EVENT_READ, "upstream")
            self._log(
                {
                    "t": now,
                    "event": "rebind",
                    "client": list(binding.client),
                    "old": list(old_sock.getsockname()[:2]),
                    "new": list(new_sock.getsockname()[:2]),
                }
            )
        self.rebinds += 1
        self._next_rebind = (
            None
            if config.rebind_every is None
            else (self._next_rebind or now) + config.rebind_every
        )


# ----------------------------------------------------------------------
# the relay in its own process
# ----------------------------------------------------------------------


class NetSimProcess:
    """The same relay run as ``python -m interop.netsim`` in a child process.

    For timing-critical runs next to CPU-heavy work in the test process: the
    child has its own interpreter, so the parent's threads cannot delay it.
    ``args`` are CLI options (as for :func:`main`) besides ``--listen`` and
    ``--log``; the log is read back with :meth:`records` after :meth:`stop`.
    """

    def __init__(self, server: Address, args: Sequence[str], log_path: str) -> None:
        self.server = server
        self.args = list(args)
        self.log_path = log_path
        self.address: Address = ("127.0.0.1", 0)
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> NetSimProcess:
        host, port = self.server
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "interop.netsim",
                "--listen",
                "127.0.0.1:0",
                "--server",
                f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "--log",
                self.log_path,
                *self.args,
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("READY"):
            self.stop()
            raise RuntimeError(f"netsim did not start: {line!r}")
        _, host, port_text = line.split()
        self.address = (host, int(port_text))
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def records(self) -> list[Record]:
        with open(self.log_path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def __enter__(self) -> NetSimProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# ----------------------------------------------------------------------
# units, scenarios and the command line
# ----------------------------------------------------------------------

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_RATE_UNITS = {
    "bps": 1.0,
    "kbps": 1e3,
    "mbps": 1e6,
    "gbps": 1e9,
    "b/s": 1.0,
    "kb/s": 1e3,
    "mb/s": 1e6,
    "gb/s": 1e9,
}


def parse_time(text: str) -> float:
    """``15ms``, ``1.5s``, ``200us`` -> seconds (a bare ``0`` is allowed)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(us|ms|s)?\s*", text)
    if not match or (match.group(2) is None and float(match.group(1)) != 0):
        raise ValueError(f"a time needs a unit (us, ms, s): {text!r}")
    return float(match.group(1)) * _TIME_UNITS[match.group(2) or "s"]


def parse_rate(text: str) -> float | None:
    """``10Mbps``, ``500kbps`` -> bits/s; ``0``, ``none``, ``inf`` -> unlimited."""
    if text.strip().lower() in ("0", "none", "inf", "unlimited"):
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmg]?(?:bps|b/s))\s*", text, re.I)
    if not match:
        raise ValueError(f"a rate looks like 10Mbps or 500kbps: {text!r}")
    return float(match.group(1)) * _RATE_UNITS[match.group(2).lower()]


def parse_droplist(text: str) -> frozenset[int]:
    """``1,3,15`` -> {1, 3, 15} (1-based packet indices)."""
    if not text.strip():
        return frozenset()
    try:
        return frozenset(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"a droplist is comma-separated integers: {text!r}") from None


def parse_address(text: str) -> Address:
    """``127.0.0.1:4433`` or ``[::1]:4433``."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", text.strip())
    if not match:
        raise ValueError(f"an address is HOST:PORT or [V6HOST]:PORT: {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    return (host, port)


def _blackhole_windows(
    on: float, off: float, repeat: int
) -> tuple[tuple[float, float], ...]:
    """ns-3's ``--on/--off/--repeat``: flow ``on``, block ``off``, ``repeat`` times."""
    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    period = on + off
    return tuple((k * period + on, (k + 1) * period) for k in range(repeat))


def config_from_scenario(
    scenario: str,
    *,
    server: Address,
    listen: Address = ("127.0.0.1", 0),
    seed: int | str | None = 0,
) -> NetSimConfig:
    """Turn an interop-runner scenario string into a :class:`NetSimConfig`.

    Understands ``simple-p2p``, ``drop-rate``, ``corrupt-rate``,
    ``droplist``, ``blackhole`` and ``rebind`` with ns-3's option names
    (``--delay=15ms --bandwidth=10Mbps --queue=25 --rate_to_server=30 ...``).
    """
    words = shlex.split(scenario)
    if not words:
        raise ValueError("empty scenario")
    name, options = words[0], words[1:]
    known = {
        "simple-p2p",
        "drop-rate",
        "corrupt-rate",
        "droplist",
        "blackhole",
        "rebind",
    }
    if name not in known:
        raise ValueError(
            f"unknown scenario {name!r}; known: {', '.join(sorted(known))}"
        )
    values: dict[str, str] = {}
    for option in options:
        if not option.startswith("--"):
            raise ValueError(f"scenario options look like --name=value: {option!r}")
        key, _, value = option[2:].partition("=")
        values[key.replace("-", "_")] = value
    delay = parse_time(values.pop("delay", "15ms"))
    bandwidth = parse_rate(values.pop("bandwidth", "10Mbps"))
    queue = int(values.pop("queue", str(DEFAULT_QUEUE)))
    specs: dict[str, dict[str, Any]] = {TO_SERVER: {}, TO_CLIENT: {}}
    rebind: dict[str, Any] = {}
    if name in ("drop-rate", "corrupt-rate"):
        rate_key = "drop_rate" if name == "drop-rate" else "corrupt_rate"
        for direction in (TO_SERVER, TO_CLIENT):
            specs[direction][rate_key] = float(values.pop(f"rate_{direction}", "0"))
            burst = values.pop(f"burst_{direction}", None)
            if burst is not None:
                specs[direction]["burst"] = int(burst)
    elif name == "droplist":
        for direction, key in (
            (TO_SERVER, "drops_to_server"),
            (TO_CLIENT, "drops_to_client"),
        ):
            specs[direction]["droplist"] = parse_droplist(values.pop(key, ""))
    elif name == "blackhole":
        windows = _blackhole_windows(
            parse_time(values.pop("on")),
            parse_time(values.pop("off")),
            int(values.pop("repeat", "1")),
        )
        direction_opt = values.pop("direction", "both")
        if direction_opt not in ("both", "toserver", "toclient"):
            raise ValueError(
                f"--direction is both, toserver or toclient, not {direction_opt!r}"
            )
        if direction_opt in ("both", "toserver"):
            specs[TO_SERVER]["blackholes"] = windows
        if direction_opt in ("both", "toclient"):
            specs[TO_CLIENT]["blackholes"] = windows
    elif name == "rebind":
        rebind["rebind_first"] = parse_time(values.pop("first_rebind"))
        if "rebind_freq" in values:
            rebind["rebind_every"] = parse_time(values.pop("rebind_freq"))
        if "rebind_addr" in values:
            values.pop("rebind_addr")
            rebind["rebind_addresses"] = True
    if values:
        raise ValueError(f"scenario {name!r} does not take {sorted(values)}")
    links = {
        d: LinkSpec(
            delay=delay,
            bandwidth=bandwidth,
            queue=queue,
            impairment=ImpairmentSpec(**specs[d]),
        )
        for d in (TO_SERVER, TO_CLIENT)
    }
    return NetSimConfig(
        server=server,
        listen=listen,
        to_server=links[TO_SERVER],
        to_client=links[TO_CLIENT],
        seed=seed,
        **rebind,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m interop.netsim",
        description="UDP relay reproducing the QUIC interop runner's simulated link.",
    )
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT clients send to")
    p.add_argument("--server", required=True, help="HOST:PORT of the server")
    p.add_argument(
        "--scenario",
        help='an interop-runner scenario, e.g. "drop-rate --delay=15ms ..."',
    )
    p.add_argument("--delay", default="15ms", help="one-way delay (default 15ms)")
    p.add_argument(
        "--bandwidth", default="10Mbps", help="link rate, or 0 for unlimited"
    )
    p.add_argument(
        "--queue", default=str(DEFAULT_QUEUE), help="drop-tail queue, packets (or none)"
    )
    p.add_argument("--mtu", default=str(DEFAULT_MTU), help="IP MTU in bytes (or none)")
    for d in ("server", "client"):
        p.add_argument(
            f"--drop-to-{d}", type=float, default=0.0, help="drop rate, percent"
        )
        p.add_argument(
            f"--corrupt-to-{d}", type=float, default=0.0, help="corrupt rate, percent"
        )
        p.add_argument(
            f"--burst-to-{d}", type=int, help="most random drops/corruptions in a row"
        )
        p.add_argument(
            f"--drops-to-{d}", default="", help="1-based packet numbers to drop: 1,3,15"
        )
        p.add_argument(
            f"--blackhole-to-{d}",
            action="append",
            default=[],
            metavar="START:END",
            help="drop everything between two times (e.g. 2s:4s); repeatable",
        )
    p.add_argument(
        "--blackhole",
        action="append",
        default=[],
        metavar="START:END",
        help="both directions",
    )
    p.add_argument("--rebind-first", help="first NAT rebind (e.g. 1s)")
    p.add_argument("--rebind-every", help="later rebinds (e.g. 5s)")
    p.add_argument(
        "--rebind-addr", action="store_true", help="rebind source addresses too"
    )
    p.add_argument("--seed", default="0", help="seed for every random choice")
    p.add_argument("--log", help="write JSON-lines records here ('-' for stdout)")
    p.add_argument("--duration", help="stop after this long (e.g. 60s)")
    p.add_argument(
        "--pcap-dir",
        help="capture both sides of the link into trace_node_left/right.pcap here",
    )
    return p


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("none", "inf", "unlimited") else int(text)


def _windows(texts: Sequence[str]) -> tuple[tuple[float, float], ...]:
    windows = []
    for text in texts:
        start, sep, end = text.partition(":")
        if not sep:
            raise ValueError(f"a blackhole window is START:END, e.g. 2s:4s: {text!r}")
        windows.append((parse_time(start), parse_time(end)))
    return tuple(windows)


def config_from_args(args: argparse.Namespace) -> NetSimConfig:
    server = parse_address(args.server)
    listen = parse_address(args.listen)
    seed: int | str = int(args.seed) if args.seed.lstrip("-").isdigit() else args.seed
    if args.scenario:
        return config_from_scenario(
            args.scenario, server=server, listen=listen, seed=seed
        )
    mtu = _optional_int(args.mtu)
    links = {}
    for d in ("server", "client"):
        links[d] = LinkSpec(
            delay=parse_time(args.delay),
            bandwidth=parse_rate(args.bandwidth),
            queue=_optional_int(args.queue),
            mtu=None if mtu == 0 else mtu,
            impairment=ImpairmentSpec(
                drop_rate=getattr(args, f"drop_to_{d}"),
                corrupt_rate=getattr(args, f"corrupt_to_{d}"),
                burst=getattr(args, f"burst_to_{d}"),
                droplist=parse_droplist(getattr(args, f"drops_to_{d}")),
                blackholes=_windows(
                    [*args.blackhole, *getattr(args, f"blackhole_to_{d}")]
                ),
            ),
        )
    return NetSimConfig(
        server=server,
        listen=listen,
        to_server=links["server"],
        to_client=links["client"],
        rebind_first=parse_time(args.rebind_first) if args.rebind_first else None,
        rebind_every=parse_time(args.rebind_every) if args.rebind_every else None,
        rebind_addresses=args.rebind_addr,
        seed=seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
        duration = parse_time(args.duration) if args.duration else None
    except (ValueError, KeyError) as exc:
        parser.error(str(exc))
    log: str | IO[str] | None = sys.stdout if args.log == "-" else args.log
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sim = NetSim(config, log_file=log, keep_records=False, pcap_dir=args.pcap_dir)
    sim.start()
    host, port = sim.address
    print(
        f"READY {host} {port}",
        file=sys.stderr if args.log == "-" else sys.stdout,
        flush=True,
    )
    try:
        stop.wait(duration)
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
