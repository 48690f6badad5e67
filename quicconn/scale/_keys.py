"""``ServerKeys``: the secrets every server of a pool must share.

A connection's packets can reach any worker of a group, or any host
behind a load balancer, at moments the connection's owner is not
involved: a client's retried Initial, a resumption, a packet for a
connection whose worker died.  Whoever receives it must hold the same
keys as the server that minted the token, ticket or connection ID.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

#: Bytes of each key :meth:`ServerKeys.generate` draws.
KEY_SIZE = 32


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """Keys shared by the servers of a pool (a quicconn extension).

    * ``stateless_reset_key``: stateless reset tokens are derived from it,
      so any server can reset a connection another one lost;
    * ``retry_token_key``: Retry tokens minted by one server validate on
      any other;
    * ``session_ticket_key``: session tickets (resumption, 0-RTT) issued by
      one server are accepted by any other.

    Keep them secret (file mode 0600) and the same on every host.
    """

    stateless_reset_key: bytes
    retry_token_key: bytes
    session_ticket_key: bytes

    @classmethod
    def generate(cls) -> ServerKeys:
        """Fresh random keys."""
        return cls(*(os.urandom(KEY_SIZE) for _ in fields(cls)))

    def apply(self, ctx: Any) -> None:
        """Set the keys on a server ``quicconn.Context``."""
        ctx.stateless_reset_key = self.stateless_reset_key
        ctx.retry_token_key = self.retry_token_key
        ctx.session_ticket_key = self.session_ticket_key

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the keys to ``path`` (JSON, hex), readable by the owner only."""
        document = {
            field.name: getattr(self, field.name).hex() for field in fields(self)
        }
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as fp:
            json.dump(document, fp, indent=1)
            fp.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ServerKeys:
        """Read keys :meth:`save` wrote; ValueError says what is wrong."""
        try:
            document = json.loads(Path(path).read_text())
            return cls(
                **{
                    field.name: bytes.fromhex(document[field.name])
                    for field in fields(cls)
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{os.fspath(path)!r} holds no server keys: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return "ServerKeys(<secret>)"


__all__ = ["KEY_SIZE", "ServerKeys"]
