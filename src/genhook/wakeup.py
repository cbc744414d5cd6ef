"""Wake-ups between the processes of one genhook install, so nobody naps on the hot path.

The process serving the API owns a *hub*: a Unix datagram socket in Linux's abstract namespace,
named after the database URL. Worker processes bind sockets of their own and say ``hello`` to
the hub; the hub tells every worker ``job`` when a trigger is accepted, and workers tell the hub
``delivery`` (a job ended: the outbox has work) and ``event`` (a job changed state: SSE
listeners look). Datagrams are hints only: every process still polls every
``GENHOOK_POLL_SECONDS``, so a lost datagram (or a platform without abstract sockets) costs
latency, never correctness.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("genhook.wakeup")

MESSAGES = (b"hello", b"job", b"delivery", b"event")


def _address(key: str, role: str) -> bytes:
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"\0genhook-{digest}-{role}".encode()


class Bus:
    """One process's end: bind, receive hints on a thread, send hints to peers."""

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
