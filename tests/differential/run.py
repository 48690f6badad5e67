"""Run differential scenarios through OpenSSL 3.5 and quicconn; print JSON traces.

Started by :func:`tests.differential.process.run_scenarios` under trixie's
loader with the OpenSSL 3.5 tree's library path, so that ``ctypes`` finds
libssl 3.5 (quicconn and its peer run in the same process, on their own
library).  Usage::

    python -m tests.differential.run CERTDIR [SCENARIO ...]

prints one JSON object: ``{"version": ..., "results": {name: {"openssl":
trace, "quicconn": trace}}}``; a scenario that raised reports
``{"error": traceback}`` for that implementation.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from .adapters import Adapter, OpenSSLClient, QuicconnClient
from .libssl import LibSSL
from .peer import ClientPeer, Peer
from .scenarios import ALPN, SCENARIOS, Env, Scenario


def run_one(client: Adapter, scenario: Scenario, env: Env) -> dict[str, Any]:
    peer = env.new_peer(**scenario.peer)
    try:
        if scenario.role == "dtls":
            pass  # the scenario makes its own DTLS context and object
        elif scenario.role == "server":
            client.new_ctx(
                cafile=None,
                alpn=scenario.alpn,
                server=True,
                certfile=env.certfile,
                keyfile=env.keyfile,
            )
        else:
            client.new_ctx(cafile=getattr(env, scenario.ca), alpn=scenario.alpn)
            if scenario.before_conn is not None:
                scenario.before_conn(client)
            client.new_conn(peer.address[:2], scenario.host)
        scenario.run(client, peer, env)
        return {"trace": client.trace}
    except Exception:
        return {"trace": client.trace, "error": traceback.format_exc()}
    finally:
        try:
            client.free_all()
        finally:
            peer.stop()


def main(argv: list[str]) -> int:
    certdir = Path(argv[0])
    names = argv[1:] or list(SCENARIOS)

    def new_peer(**options: Any) -> Peer:
        return Peer(
            str(certdir / "cert.pem"),
            str(certdir / "key.pem"),
            alpn=ALPN,
            **options,
        )

    env = Env(
        cafile=str(certdir / "ca.pem"),
        certfile=str(certdir / "cert.pem"),
        keyfile=str(certdir / "key.pem"),
        other_cafile=str(certdir / "other-ca.pem"),
        new_peer=new_peer,
        new_client_peer=lambda address: ClientPeer(
            str(certdir / "ca.pem"), address, alpn=ALPN
        ),
    )
    lib = LibSSL()
    results: dict[str, Any] = {}
    for name in names:
        scenario = SCENARIOS[name]
        results[name] = {
            "openssl": run_one(OpenSSLClient(lib), scenario, env),
            "quicconn": run_one(QuicconnClient(), scenario, env),
        }
    json.dump(
        {"version": lib.version(), "results": results},
        sys.stdout,
        default=lambda o: o.decode("latin-1") if isinstance(o, bytes) else repr(o),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
