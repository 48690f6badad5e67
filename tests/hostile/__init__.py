"""Hostile-peer tests: every attack that once worked, kept in the suite.

Each module attacks quicconn as a hostile peer would, on loopback or on the
in-memory pair with a fake clock (where the semantics suffice), and checks
that the attack now fails:

* test_half_open.py -- a flood of silent ClientHellos against a server that
  is not accepting (a real client still connects; half-open connections
  end at the handshake timeout, and the oldest makes room for new ones);
* test_malformed.py -- 100,000 mixed malformed datagrams during live
  transfers (byte-exact transfers, nothing raised out of handle_events);
* test_core_failures.py -- exceptions raised inside a core (a certificate
  whose name check raises; faults injected into each core) end the
  connection at once with an error naming them, instead of dropping
  datagrams until the idle timeout;
* test_loss.py -- sustained 30% loss in both directions (a 2 MB echo
  survives: the probe timeout stops doubling);
* the HTTP attacks (an oversized HEADERS flood, a reader that starves the
  server of connection credit) go in a module of their own here.
"""
