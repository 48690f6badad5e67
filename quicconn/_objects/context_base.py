"""What the QUIC and DTLS contexts share: role, verification mode, checked
CA locations and ALPN names, and the key log file."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TextIO

from .._constants import VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_NONE, VERIFY_PEER, Role

logger = logging.getLogger("quicconn")

_VERIFY_MODES = (VERIFY_NONE, VERIFY_PEER, VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT)


class ContextBase:
    """Base of :class:`~quicconn.Context` and :class:`~quicconn.DTLSContext`."""

    def __init__(self, role: Role | int) -> None:
        try:
            self.role = Role(role)
        except ValueError:
            raise ValueError(
                f"role must be quicconn.CLIENT or quicconn.SERVER, not {role!r}"
            ) from None
        self._verify_mode = VERIFY_PEER if self.role is Role.CLIENT else VERIFY_NONE
        #: Append TLS secrets here in NSS key log format (for Wireshark); off
        #: unless set.  ``$SSLKEYLOGFILE`` is not read: anyone who can read
        #: the file can decrypt the connections, so logging is something the
        #: application asks for (the file is created mode 0600).
        self.keylog_filename: str | None = None
        self._keylog_file: TextIO | None = None
        self._keylog_opened_for: str | None = None

    def _changed(self) -> None:
        """Called after every setting change (a subclass may rebuild state)."""

    # -- verification -----------------------------------------------------

    @property
    def verify_mode(self) -> int:
        """``VERIFY_PEER`` (client default) or ``VERIFY_NONE`` (SSL_CTX_set_verify)."""
        return self._verify_mode

    @verify_mode.setter
    def verify_mode(self, mode: int) -> None:
        if mode not in _VERIFY_MODES:
            raise ValueError(
                "verify_mode must be VERIFY_NONE, VERIFY_PEER or "
                f"VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT, not {mode!r}"
            )
        self._verify_mode = mode
        if mode == VERIFY_NONE and self.role is Role.CLIENT:
            logger.warning(
                "certificate verification is off (VERIFY_NONE): the server's "
                "identity is not checked, so anyone on the path can impersonate "
                "it and read the connection"
            )
        self._changed()

    def set_verify(self, mode: int) -> None:
        """Set the verification mode (SSL_CTX_set_verify, without a callback)."""
        self.verify_mode = mode

    @staticmethod
    def _checked_ca_locations(
        cafile: str | os.PathLike[str] | None,
        capath: str | os.PathLike[str] | None,
        cadata: bytes | str | None,
    ) -> tuple[str | None, str | None, bytes | None]:
        """Validate load_verify_locations() arguments; paths and PEM bytes."""
        if cafile is None and capath is None and cadata is None:
            raise TypeError("load_verify_locations() needs cafile, capath or cadata")
        file_path = dir_path = None
        if cafile is not None:
            file_path = os.fspath(cafile)
            if not os.path.isfile(file_path):
                raise FileNotFoundError(f"CA file not found: {file_path}")
        if capath is not None:
            dir_path = os.fspath(capath)
            if not os.path.isdir(dir_path):
                raise NotADirectoryError(f"CA directory not found: {dir_path}")
        data = cadata.encode("ascii") if isinstance(cadata, str) else cadata
        return file_path, dir_path, data

    # -- protocol ---------------------------------------------------------

    @staticmethod
    def _checked_alpn(protocols: Iterable[str]) -> list[str]:
        return checked_alpn(protocols)

    # -- key log --------------------------------------------------------------

    def _keylog(self) -> TextIO | None:
        """The open key log file, if ``keylog_filename`` is set."""
        path = self.keylog_filename
        if not path:
            return None
        if self._keylog_file is None or self._keylog_opened_for != path:
            if self._keylog_file is not None:
                self._keylog_file.close()
            self._keylog_file = open_private(path)
            self._keylog_opened_for = path
        return self._keylog_file

    def __repr__(self) -> str:
        return f"<quicconn.{type(self).__name__} {self.role.name}>"


def open_private(path: str) -> TextIO:
    """Open ``path`` for appending text; a new file is readable by its owner
    only (0600): a key log lets anyone who reads it decrypt connections."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return open(fd, "a", buffering=1, encoding="ascii")


def checked_alpn(protocols: Iterable[str]) -> list[str]:
    """ALPN protocol names, checked: str, 1 to 255 bytes each."""
    if isinstance(protocols, str):
        raise TypeError("ALPN protocols are a list of names, not one str")
    names = list(protocols)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"ALPN protocol names are str, got {name!r}")
        if not 0 < len(name.encode()) < 256:
            raise ValueError(f"ALPN protocol name must be 1..255 bytes: {name!r}")
    return names


__all__ = ["ContextBase", "checked_alpn", "open_private"]
