"""Wake-ups between the processes of one genhook install, so nobody naps on the hot path.

:class:`WakeupChannel` is the port: the API process's end is the *hub*; workers register with
it (``hello``: at once when their end opens, then every half second, so that a restarted hub
learns of them), the hub tells every worker ``job`` when a trigger is accepted, and workers tell
the hub ``delivery`` (a job ended: the outbox has work) and ``event`` (a job changed state: SSE
listeners look). Hints only: every process still polls every ``GENHOOK_POLL_SECONDS``, so a lost
hint (or a channel that could not open) costs latency, never correctness.

:class:`SocketBus` is the adapter in use: Unix datagram sockets in Linux's abstract namespace,
named after the *resolved* database (:func:`database_identity`: the absolute path of a SQLite
file, host, port and name of a PostgreSQL database), so that two installs never share a name
and every process of one install finds the others whatever its working directory. PostgreSQL's
LISTEN/NOTIFY could be another adapter (processes on several machines).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

log = logging.getLogger("genhook.wakeup")

MESSAGES = (b"hello", b"job", b"delivery", b"event")


class WakeupChannel(Protocol):
    """One process's end of the wake-up channel of an install (the port)."""

    @property
    def active(self) -> bool:
        """False when hints cannot be sent or received (the process relies on polling)."""
        ...

    def on(self, message: bytes, handler: Callable[[bytes], None]) -> None:
        """Call ``handler(sender)`` for each ``message`` received."""
        ...

    def to_hub(self, message: bytes) -> None:
        """A hint to the API process."""
        ...

    def broadcast(self, message: bytes) -> None:
        """A hint to every registered worker process."""
        ...

    def close(self) -> None:
        """Stop receiving."""
        ...


def database_identity(url: str) -> str:
    """The database ``url`` names, independent of how it is written and of the working dir."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = parsed.database or ":memory:"
        if path != ":memory:":
            path = str(Path(path).expanduser().resolve())
        return f"sqlite:{path}"
    host = (parsed.host or "localhost").lower()
    return f"{backend}://{host}:{parsed.port or 5432}/{parsed.database or ''}"


def open_channel(database_url: str, role: str) -> WakeupChannel:
    """This process's end of the install's wake-up channel (``hub`` or a worker role)."""
    return SocketBus(database_identity(database_url), role)


def _address(key: str, role: str) -> bytes:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"\0genhook-{digest}-{role}".encode()


class SocketBus:
    """A :class:`WakeupChannel` over abstract Unix datagram sockets: bind, receive hints on a
    thread, send hints to peers. ``key`` names the install (:func:`database_identity`)."""

    def __init__(self, key: str, role: str) -> None:
        self.key = key
        self.address = _address(key, role)
        self.hub = _address(key, "hub")
        self.peers: set[bytes] = set()
        self._lock = threading.Lock()
        self._handlers: dict[bytes, Callable[[bytes], None]] = {}
        self._sock: socket.socket | None = None
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(self.address)
        except OSError as exc:  # no abstract namespace here, or the name is taken
            log.info("wake-ups off (%s); relying on polling", exc)
            return
        sock.setblocking(True)
        self._sock = sock
        threading.Thread(target=self._receive, name=f"genhook-bus-{role}", daemon=True).start()
        if role != "hub":
            # register at once: a trigger accepted before the first periodic hello would
            # otherwise wait for a poll
            self.to_hub(b"hello")

    @property
    def active(self) -> bool:
        """False where the socket could not be bound (polling only)."""
        return self._sock is not None

    def on(self, message: bytes, handler: Callable[[bytes], None]) -> None:
        """Call ``handler(sender)`` for each ``message`` received."""
        self._handlers[message] = handler

    def send(self, to: bytes, message: bytes) -> bool:
        """Send one hint; False if the peer is gone (or the bus is off)."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto(message, socket.MSG_DONTWAIT, to)
        except OSError:
            return False
        return True

    def to_hub(self, message: bytes) -> None:
        """A hint to the API process."""
        self.send(self.hub, message)

    def broadcast(self, message: bytes) -> None:
        """A hint to every registered peer; peers that are gone are forgotten."""
        with self._lock:
            peers = list(self.peers)
        for peer in peers:
            if not self.send(peer, message):
                with self._lock:
                    self.peers.discard(peer)

    def close(self) -> None:
        """Stop receiving."""
        if self._sock is not None:
            sock, self._sock = self._sock, None
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _receive(self) -> None:
        while self._sock is not None:
            try:
                data, sender = self._sock.recvfrom(64)
            except OSError:
                return
            if data == b"hello" and isinstance(sender, bytes):
                with self._lock:
                    self.peers.add(sender)
            handler = self._handlers.get(data)
            if handler is not None:
                try:
                    handler(sender if isinstance(sender, bytes) else b"")
                except Exception:
                    log.exception("wake-up handler failed")


def worker_role() -> str:
    """A role name unique to this worker process."""
    return f"worker-{os.getpid()}"
