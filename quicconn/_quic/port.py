"""``Port``: the server side of one socket (OpenSSL's QUIC_PORT).

A listener's reactor hands every datagram that no connection claims to its
port.  The port asks the core backend's stateless :class:`ServerGate` what
to do (Version Negotiation, Retry, stateless reset, refuse, or accept),
counts what it did, and for an accepted Initial makes a channel at once.
It enforces the listener's limits and keeps the session tickets it issued
for resumption, or, with a ticket key, seals each into the label the client
presents, so that any server with the key resumes it (a worker group,
hosts behind a load balancer).

A new connection is *half-open* until its handshake completes: it is kept
apart, bounded (``max_handshakes``: when full, the oldest half-open
connection is dropped to make room) and short-lived (the handshake
timeout), and only a completed handshake enters the accept queue that
``accept_connection()`` takes from and ``max_pending`` bounds.  A flood of
ClientHellos that never continue therefore cannot fill the accept queue of
a server that is not accepting at that instant, and the connections it
makes go away within seconds (OpenSSL 3.5 queues a connection at its first
Initial, where such a flood holds every slot until the idle timeout).
Under MODE_ASYNC with an offload engine a connection is queued at once, as
in OpenSSL: its paused signature is the application's to drive.

The connection objects themselves belong to the objects layer: the port
gets them from a factory and knows them only as :class:`PortMember`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from .._core.interface import (
    Address,
    CoreBackend,
    GateAction,
    GateDecision,
    GateReply,
    ServerGate,
)
from .._core.tickets import TicketSealer
from .channel import Channel
from .reactor import Reactor

#: Session tickets a port remembers for resumption.
TICKET_STORE_SIZE = 4096


@dataclass
class ListenerStats:
    """Counters of what the listener did with datagrams it owned."""

    connections_accepted: int = 0
    connections_refused: int = 0
    #: Half-open connections abandoned by the handshake timeout.
    handshakes_timed_out: int = 0
    #: Half-open connections dropped to make room for new ones.
    handshakes_evicted: int = 0
    retries_sent: int = 0
    version_negotiations_sent: int = 0
    stateless_resets_sent: int = 0
    datagrams_dropped: int = 0


_REPLY_COUNTERS = {
    GateReply.RETRY: "retries_sent",
    GateReply.VERSION_NEGOTIATION: "version_negotiations_sent",
    GateReply.STATELESS_RESET: "stateless_resets_sent",
}


class PortMember(Protocol):
    """A connection object made for one of the port's channels."""

    def free_locked(self) -> None:
        """Release the connection; the reactor lock is held."""


M = TypeVar("M", bound=PortMember)


class Port(Generic[M]):
    """Accepts connections on one reactor; see the module docstring."""

    def __init__(
        self,
        reactor: Reactor,
        backend: CoreBackend,
        gate: ServerGate,
        make: Callable[[], tuple[Channel, M]],
        *,
        reset_key: bytes,
        cid_length: int,
        accepts: bool,
        max_pending: int,
        max_live: int,
        max_handshakes: int,
        ticket_key: bytes | None = None,
    ) -> None:
        self.reactor = reactor
        self.backend = backend
        self.gate = gate
        self._make = make
        self._reset_key = reset_key
        #: False for a client-only listener (LISTENER_FLAG_NO_ACCEPT).
        self.accepts = accepts
        self.listening = False
        #: Connections whose handshake completed, for accept_connection().
        self.accept_queue: deque[M] = deque()
        #: Half-open connections (handshake in progress), oldest first.
        self.handshaking: OrderedDict[Channel, M] = OrderedDict()
        self._members: dict[Channel, M] = {}
        self._tickets: OrderedDict[bytes, Any] = OrderedDict()
        self._sealer = None if ticket_key is None else TicketSealer(ticket_key)
        self.stats = ListenerStats()
        #: Connections waiting in the accept queue before new ones are refused.
        self.max_pending = max_pending
        #: Live connections (half-open, queued or accepted) before new ones
        #: are refused.
        self.max_live = max_live
        #: Half-open connections before the oldest is dropped for a new one.
        self.max_handshakes = max_handshakes
        reactor.cid_length = cid_length
        reactor.unroutable_handler = self.on_unroutable

    @property
    def live(self) -> int:
        """Connections made and not yet terminated or freed."""
        return len(self._members)

    def pop_accepted(self) -> M | None:
        return self.accept_queue.popleft() if self.accept_queue else None

    def stop(self) -> None:
        """Stop listening and free every connection never accepted."""
        self.listening = False
        while self.accept_queue:
            self.accept_queue.popleft().free_locked()
        while self.handshaking:
            self.handshaking.popitem(last=False)[1].free_locked()

    def close_all(self, error_code: int, reason: str) -> int:
        """Close every live connection (CONNECTION_CLOSE goes out with the
        next flush, done here); how many were closed.  Lock held."""
        closed = 0
        for channel in list(self._members):
            core = channel.core
            if core is None or core.is_closing:
                continue
            core.close(error_code, reason)
            self.reactor.mark_dirty(core)
            closed += 1
        self.reactor.flush()
        return closed

    # -- datagrams no connection claims (reactor callback, lock held) ----

    def on_unroutable(self, data: bytes, addr: Address, now: float) -> None:
        if not self.listening or not self.accepts:
            self.stats.datagrams_dropped += 1
            return
        decision = self.gate.inspect(data, addr, now)
        if decision.action is GateAction.DROP:
            self.stats.datagrams_dropped += 1
        elif decision.action is GateAction.REPLY:
            assert decision.reply is not None
            self.reactor.transport.send_batch([(decision.reply, addr)])
            counter = (
                None
                if decision.reply_kind is None
                else _REPLY_COUNTERS.get(decision.reply_kind)
            )
            if counter is not None:
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        else:
            if decision.starts_handshake is None and self._crowded():
                # A place is at stake (a half-open connection evicted, or a
                # refusal sent): only for an Initial that decrypts.
                decision = self.gate.prove(decision, data)
                if decision.action is GateAction.DROP:
                    self.stats.datagrams_dropped += 1
                    return
            if not self._make_room():
                if decision.starts_handshake is False:
                    # The rest of a ClientHello whose start was refused already.
                    self.stats.datagrams_dropped += 1
                    return
                self.stats.connections_refused += 1
                refusal = self.gate.refuse(
                    decision, "server busy: too many connections"
                )
                self.reactor.transport.send_batch([(refusal, addr)])
            else:
                self._create(decision, data, addr, now)

    def _crowded(self) -> bool:
        """Whether a new connection would cost another its place, or be
        refused (:meth:`_make_room` would evict or say no)."""
        return (
            len(self.accept_queue) >= self.max_pending
            or len(self.handshaking) >= self.max_handshakes
            or len(self._members) >= self.max_live
        )

    def _make_room(self) -> bool:
        """Whether a new connection may start, dropping the oldest half-open
        connection if that is what stands in the way.

        A full accept queue refuses: the application is not keeping up.  A
        full half-open table or connection limit drops the oldest half-open
        connection instead: a flood of silent ClientHellos then only
        shortens the time a real client has to complete its handshake (it
        retransmits a lost Initial), rather than locking every one out.
        """
        if len(self.accept_queue) >= self.max_pending:
            return False
        while self.handshaking and self._crowded():
            _, oldest = self.handshaking.popitem(last=False)
            self.stats.handshakes_evicted += 1
            oldest.free_locked()  # silently: its peer may not exist
        return len(self._members) < self.max_live

    def _create(
        self, decision: GateDecision, data: bytes, addr: Address, now: float
    ) -> None:
        channel, member = self._make()
        # The channel exists (with its MODE_ASYNC job host) before the first
        # datagram: processing the ClientHello may pause in a job.
        channel.start_server(
            self.reactor,
            decision,
            reset_key=self._reset_key,
            fetch_ticket=self._fetch_ticket,
            store_ticket=self._store_ticket,
        )
        if not channel.receive_first(data, addr, now):
            # Shaped like an Initial but undecryptable: junk, which must
            # not take a connection slot or a place in the accept queue.
            member.free_locked()
            self.stats.datagrams_dropped += 1
            return
        core = channel.require_core()
        channel.observer = self
        self.reactor.add_core(
            core,
            decision.client_dcid,
            core.host_cid,
            batched=channel.receives_batches,
        )
        self.reactor.mark_dirty(core)
        self._members[channel] = member
        if channel.async_host is not None:
            # MODE_ASYNC: the application's calls drive a paused signature.
            self.accept_queue.append(member)
        else:
            self.handshaking[channel] = member
        self.stats.connections_accepted += 1

    def _store_ticket(self, ticket: Any) -> bytes | None:
        if self._sealer is not None:
            return self._sealer.seal(ticket)
        self._tickets[self.backend.ticket_label(ticket)] = ticket
        while len(self._tickets) > TICKET_STORE_SIZE:
            self._tickets.popitem(last=False)
        return None

    def _fetch_ticket(self, label: bytes) -> Any:
        if self._sealer is None:
            return self._tickets.get(label)
        session = self._sealer.open(label)
        return None if session is None else self.backend.decode_session(session)

    # -- what channels report (lock held) ----------------------------------

    def on_channel_established(self, channel: Channel) -> None:
        member = self.handshaking.pop(channel, None)
        if member is None:
            return  # queued at once (MODE_ASYNC), or already gone
        if len(self.accept_queue) < self.max_pending:
            self.accept_queue.append(member)
            return
        # The accept queue filled up while it was handshaking.
        self.stats.connections_refused += 1
        self.handshaking[channel] = member  # freed when it terminated
        channel.refuse("server busy: the accept queue is full")

    def on_channel_terminated(self, channel: Channel) -> None:
        member = self._members.pop(channel, None)
        if member is not None and channel in self.handshaking:
            del self.handshaking[channel]
            if channel.handshake_timed_out():
                self.stats.handshakes_timed_out += 1
            member.free_locked()
        elif member is not None and member in self.accept_queue:
            # Never accepted and now dead: the application never sees it.
            self.accept_queue.remove(member)
            member.free_locked()
        elif channel.core is not None:
            self.reactor.remove_core(channel.core)

    def on_channel_released(self, channel: Channel) -> None:
        member = self._members.pop(channel, None)
        self.handshaking.pop(channel, None)
        if member is not None and member in self.accept_queue:
            self.accept_queue.remove(member)


__all__ = ["TICKET_STORE_SIZE", "ListenerStats", "Port", "PortMember"]
