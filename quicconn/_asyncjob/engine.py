"""Offload engines for MODE_ASYNC: where private-key signing actually happens.

OpenSSL hands an asynchronous private-key operation to an async-capable
ENGINE or provider (QAT hardware, the ``dasync`` test engine).  quicconn's
counterpart is an :class:`AsyncEngine`: the paused job gives it a
:class:`SignRequest`; the engine performs the signature somewhere else and
reports back with :meth:`SignRequest.complete` or :meth:`SignRequest.fail`,
from any thread.  Three kinds are provided or foreseen:

* :class:`ThreadPoolEngine` signs in worker threads (``cryptography``
  releases the GIL while signing, so this is real parallelism);
* :class:`ProcessPoolEngine` signs in worker processes, keeping the CPU cost
  of RSA away from the process that runs the event loop;
* a user engine (a remote signer, a hardware module) subclasses
  :class:`AsyncEngine` and implements :meth:`AsyncEngine.submit`.

What is signed is described without reference to aioquic: the data and a
TLS 1.3 ``SignatureScheme`` code (RFC 8446 section 4.2.3), so a request can
cross a process or network boundary.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from multiprocessing.connection import wait as wait_pipes
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from .._constants import ASYNC_STATUS_EAGAIN, ASYNC_STATUS_ERR, ASYNC_STATUS_OK

logger = logging.getLogger("quicconn.engine")

# TLS 1.3 SignatureScheme codes (RFC 8446 section 4.2.3).
RSA_PKCS1_SHA256 = 0x0401
RSA_PKCS1_SHA384 = 0x0501
RSA_PKCS1_SHA512 = 0x0601
ECDSA_SECP256R1_SHA256 = 0x0403
ECDSA_SECP384R1_SHA384 = 0x0503
ECDSA_SECP521R1_SHA512 = 0x0603
RSA_PSS_RSAE_SHA256 = 0x0804
RSA_PSS_RSAE_SHA384 = 0x0805
RSA_PSS_RSAE_SHA512 = 0x0806
ED25519 = 0x0807
ED448 = 0x0808

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_PSS = {"sha256": RSA_PSS_RSAE_SHA256, "sha384": RSA_PSS_RSAE_SHA384,
        "sha512": RSA_PSS_RSAE_SHA512}  # fmt: skip
_PKCS1 = {"sha256": RSA_PKCS1_SHA256, "sha384": RSA_PKCS1_SHA384,
          "sha512": RSA_PKCS1_SHA512}  # fmt: skip
_ECDSA = {"sha256": ECDSA_SECP256R1_SHA256, "sha384": ECDSA_SECP384R1_SHA384,
          "sha512": ECDSA_SECP521R1_SHA512}  # fmt: skip
_SCHEME_HASH = {code: name for table in (_PSS, _PKCS1, _ECDSA)
                for name, code in table.items()}  # fmt: skip

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


def scheme_for(key: Any, params: Sequence[Any]) -> int:
    """The SignatureScheme meant by ``key.sign(data, *params)``.

    ``params`` are what a TLS stack passes to ``cryptography``'s ``sign``:
    ``(PSS(...), SHA256())`` for RSA-PSS, ``(ECDSA(SHA256()),)`` for ECDSA,
    nothing for EdDSA.
    """
    if isinstance(key, rsa.RSAPrivateKey) and len(params) == 2:
        pad, algorithm = params
        table = _PSS if isinstance(pad, padding.PSS) else _PKCS1
        if isinstance(pad, padding.PSS | padding.PKCS1v15):
            found = table.get(getattr(algorithm, "name", ""))
            if found is not None:
                return found
    elif isinstance(key, ec.EllipticCurvePrivateKey) and len(params) == 1:
        if isinstance(params[0], ec.ECDSA):
            found = _ECDSA.get(getattr(params[0].algorithm, "name", ""))
            if found is not None:
                return found
    elif isinstance(key, ed25519.Ed25519PrivateKey) and not params:
        return ED25519
    elif isinstance(key, ed448.Ed448PrivateKey) and not params:
        return ED448
    raise ValueError(f"no TLS signature scheme for {type(key).__name__} {params!r}")


def sign_with_scheme(key: Any, data: bytes, scheme: int) -> bytes:
    """Sign ``data`` with ``key`` as TLS 1.3 ``scheme`` prescribes."""
    if scheme in (ED25519, ED448):
        return bytes(key.sign(data))
    name = _SCHEME_HASH.get(scheme)
    if name is None:
        raise ValueError(f"unsupported signature scheme 0x{scheme:04x}")
    algorithm = _HASHES[name]()
    if scheme in _ECDSA.values():
        return bytes(key.sign(data, ec.ECDSA(algorithm)))
    if scheme in _PSS.values():
        salt = algorithm.digest_size
        pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=salt)
        return bytes(key.sign(data, pss, algorithm))
    return bytes(key.sign(data, padding.PKCS1v15(), algorithm))


class AsyncEngineError(Exception):
    """An offload engine could not perform a private-key operation."""


class SignRequest:
    """One private-key operation handed to an :class:`AsyncEngine`.

    ``key`` is the private key object, ``data`` what to sign and ``scheme``
    the TLS SignatureScheme code.  The engine calls :meth:`complete` with
    the signature or :meth:`fail` with the reason, exactly once, from any
    thread; later calls are ignored.  :meth:`sign` performs the operation
    right here, for engines that only move it to another thread.
    """

    __slots__ = ("_done", "_lock", "data", "error", "key", "scheme", "signature")

    def __init__(
        self,
        key: Any,
        data: bytes,
        scheme: int,
        done: Callable[[SignRequest], None] | None = None,
    ) -> None:
        self.key = key
        self.data = bytes(data)
        self.scheme = scheme
        self.signature: bytes | None = None
        self.error: str | None = None
        self._done = done
        self._lock = threading.Lock()

    @property
    def finished(self) -> bool:
        return self.signature is not None or self.error is not None

    def sign(self) -> bytes:
        """Perform the operation in the calling thread."""
        return sign_with_scheme(self.key, self.data, self.scheme)

    def complete(self, signature: bytes) -> None:
        """Report the signature (the engine's completion; any thread)."""
        if not isinstance(signature, bytes | bytearray) or not signature:
            self.fail(f"the engine returned no signature ({signature!r})")
            return
        self._finish(bytes(signature), None)

    def fail(self, error: BaseException | str) -> None:
        """Report that the operation failed (any thread)."""
        text = str(error) or type(error).__name__
        self._finish(None, text)

    def _finish(self, signature: bytes | None, error: str | None) -> None:
        with self._lock:
            if self.finished:
                return
            self.signature = signature
            self.error = error
        done = self._done
        if done is not None:
            done(self)

    def __repr__(self) -> str:
        state = "done" if self.finished else "pending"
        return f"<SignRequest scheme=0x{self.scheme:04x} {len(self.data)}B {state}>"


class AsyncEngine(abc.ABC):
    """An offload engine for private-key operations (OpenSSL's async ENGINE).

    Install one with ``Context.set_async_engine()`` (or per connection) and
    set ``MODE_ASYNC``; each signature the handshake needs then becomes a
    :class:`SignRequest` given to :meth:`submit`.
    """

    @abc.abstractmethod
    def submit(self, request: SignRequest) -> int:
        """Start ``request``; return an ``ASYNC_STATUS_*`` value.

        ``ASYNC_STATUS_OK``: accepted; call ``request.complete()`` or
        ``request.fail()`` later, from any thread (possibly before this
        returns).  ``ASYNC_STATUS_EAGAIN``: busy, not accepted; the job
        pauses and, when the application retries, submits again.
        ``ASYNC_STATUS_ERR``: the operation cannot be done; the handshake
        fails.  Must not block.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine's threads or processes."""

    def __enter__(self) -> AsyncEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ThreadPoolEngine(AsyncEngine):
    """Signs in a pool of worker threads.

    ``cryptography`` releases the GIL while it signs, so signatures proceed
    in parallel with the event loop.  With ``max_pending``, submissions
    beyond that many unfinished requests are refused with
    ``ASYNC_STATUS_EAGAIN`` (a full hardware queue, in OpenSSL's terms).
    """

    def __init__(self, max_workers: int = 2, max_pending: int | None = None) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1 (or None)")
        self._max_workers = max_workers
        self._max_pending = max_pending
        self._queue: deque[SignRequest] = deque()
        self._cond = threading.Condition()
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, request: SignRequest) -> int:
        with self._cond:
            if self._closed:
                return ASYNC_STATUS_ERR
            if self._max_pending is not None and self._pending >= self._max_pending:
                return ASYNC_STATUS_EAGAIN
            self._pending += 1
            self._queue.append(request)
            if len(self._threads) < self._max_workers and self._pending > len(
                self._threads
            ):
                thread = threading.Thread(
                    target=self._work,
                    name=f"quicconn-sign-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify()
        return ASYNC_STATUS_OK

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                request = self._queue.popleft()
            try:
                signature = request.sign()
            except Exception as exc:
                request.fail(exc)
            else:
                request.complete(signature)
            finally:
                with self._cond:
                    self._pending -= 1

    def close(self) -> None:
        with self._cond:
            self._closed = True
            abandoned = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for request in abandoned:
            request.fail("the engine was closed")
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)


def _key_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _process_worker(pipe: Pipe) -> None:
    """A signing process: loads keys once, then signs what it is sent."""
    keys: dict[int, Any] = {}
    while True:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        key_id, pem, data, scheme = message
        try:
            key = keys.get(key_id)
            if key is None:
                if pem is None:
                    raise AsyncEngineError("key not loaded in this worker")
                key = keys[key_id] = serialization.load_pem_private_key(pem, None)
            signature = sign_with_scheme(key, data, scheme)
            reply: tuple[bool, bytes | str] = (True, signature)
        except Exception as exc:
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            pipe.send(reply)
        except (BrokenPipeError, OSError):
            return


#: Requests a worker may have queued in its pipe: it never waits for this
#: process to hand it the next one, yet a send can never block.
_WORKER_PIPELINE = 32


@dataclass
class _Worker:
    process: Any
    pipe: Pipe
    keys: set[int]
    #: Sent and not answered yet, oldest first (a worker answers in order).
    in_flight: deque[SignRequest] = field(default_factory=deque)
    alive: bool = True


class ProcessPoolEngine(AsyncEngine):
    """Signs in worker processes, away from the event loop's GIL.

    Each worker receives the private key once (PEM over a local pipe: the
    key material is copied into the workers, which run as the same user on
    the same host) and then only ``(data, scheme)`` per signature.  One
    engine thread in this process reads the results and completes the
    requests, which is where async callbacks run.  Workers are started with
    ``mp_context`` (``"spawn"`` by default, safe in threaded programs; a
    script using it needs the usual ``if __name__ == "__main__":`` guard).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        max_pending: int | None = None,
        mp_context: str = "spawn",
    ) -> None:
        count = max_workers if max_workers is not None else min(4, os.cpu_count() or 1)
        if count < 1:
            raise ValueError("max_workers must be at least 1")
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1 (or None)")
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._queue: deque[SignRequest] = deque()
        self._pending = 0
        self._closed = False
        self._key_ids: dict[int, tuple[Any, int, bytes]] = {}
        self._next_key_id = itertools.count(1)
        context: Any = multiprocessing.get_context(mp_context)
        self._workers: list[_Worker] = []
        for _ in range(count):
            parent, child = context.Pipe(duplex=True)
            process = context.Process(
                target=_process_worker, args=(child,), daemon=True,
                name="quicconn-signer",
            )  # fmt: skip
            process.start()
            child.close()
            self._workers.append(_Worker(process, parent, set()))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(
            target=self._collect, name="quicconn-engine", daemon=True
        )
        self._thread.start()

    def worker_pids(self) -> list[int]:
        """Process ids of the signing workers (for monitoring)."""
        return [int(w.process.pid) for w in self._workers]

    # -- submission (any thread) -------------------------------------------

    def submit(self, request: SignRequest) -> int:
        with self._lock:
            if self._closed or not any(w.alive for w in self._workers):
                return ASYNC_STATUS_ERR
            if self._max_pending is not None and self._pending >= self._max_pending:
                return ASYNC_STATUS_EAGAIN
            self._pending += 1
            worker = min(
                (w for w in self._workers if w.alive),
                key=lambda w: len(w.in_flight),
            )
            if len(worker.in_flight) >= _WORKER_PIPELINE:
                self._queue.append(request)
                return ASYNC_STATUS_OK
            failed = not self._dispatch(worker, request)
        if failed:
            self._finished(request, None, "the signing process is gone")
        return ASYNC_STATUS_OK

    def _key_entry(self, key: Any) -> tuple[int, bytes]:
        entry = self._key_ids.get(id(key))
        if entry is None or entry[0] is not key:
            entry = (key, next(self._next_key_id), _key_pem(key))
            self._key_ids[id(key)] = entry
        return entry[1], entry[2]

    def _dispatch(self, worker: _Worker, request: SignRequest) -> bool:
        """Send ``request`` to an idle worker (lock held); False if it died."""
        key_id, pem = self._key_entry(request.key)
        first = key_id not in worker.keys
        try:
            worker.pipe.send(
                (key_id, pem if first else None, request.data, request.scheme)
            )
        except (BrokenPipeError, OSError):
            worker.alive = False
            return False
        worker.keys.add(key_id)
        worker.in_flight.append(request)
        return True

    # -- the engine thread: results --------------------------------------

    def _collect(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                pipes = {w.pipe: w for w in self._workers if w.alive}
            ready = wait_pipes([*pipes, self._wake_r])
            for item in ready:
                if item == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 512)
                    continue
                assert isinstance(item, Pipe)
                self._on_reply(pipes[item])

    def _on_reply(self, worker: _Worker) -> None:
        signature: bytes | None = None
        error: str | None = None
        try:
            ok, value = worker.pipe.recv()
        except (EOFError, OSError):
            worker.alive = False
            error = "the signing process exited"
        else:
            if ok:
                assert isinstance(value, bytes)
                signature = value
            else:
                error = str(value)
        failed: list[SignRequest] = []
        answered: list[SignRequest] = []
        with self._lock:
            if not worker.alive:
                # Everything it was given is lost.
                answered = list(worker.in_flight)
                worker.in_flight.clear()
                if not any(w.alive for w in self._workers):
                    failed = list(self._queue)
                    self._queue.clear()
            else:
                if worker.in_flight:
                    answered.append(worker.in_flight.popleft())
                while self._queue and len(worker.in_flight) < _WORKER_PIPELINE:
                    nxt = self._queue.popleft()
                    if not self._dispatch(worker, nxt):
                        failed.append(nxt)
                        break
        for request in answered:
            self._finished(request, signature, error)
        for lost in failed:
            self._finished(lost, None, "no signing process is left")

    def _finished(
        self, request: SignRequest, signature: bytes | None, error: str | None
    ) -> None:
        with self._lock:
            self._pending -= 1
        if signature is not None:
            request.complete(signature)
        else:
            request.fail(error or "signing failed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            abandoned = list(self._queue)
            self._queue.clear()
            in_flight = [r for w in self._workers for r in w.in_flight]
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for worker in self._workers:
            with contextlib.suppress(OSError, BrokenPipeError):
                worker.pipe.send(None)
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.pipe.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        for request in abandoned + in_flight:
            request.fail("the engine was closed")


__all__ = [
    "AsyncEngine",
    "AsyncEngineError",
    "PrivateKey",
    "ProcessPoolEngine",
    "SignRequest",
    "ThreadPoolEngine",
    "scheme_for",
    "sign_with_scheme",
]
