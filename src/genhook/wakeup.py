"""Wake-ups between the processes of one genhook install, so nobody naps on the hot path.

:class:`WakeupChannel` is the port: the API process's end is the *hub*; workers register with
it (``hello``: at once when their end opens, then every half second, so that a restarted hub
learns of them), the hub tells every worker ``job`` when a trigger is accepted, and workers tell
the hub ``delivery`` (a job ended: the outbox has work) and ``event`` (a job changed state: SSE
listeners look). Hints only: every process still polls every ``GENHOOK_POLL_SECONDS``, so a lost
hint (or a channel that could not open) costs latency, never correctness.

Two adapters, each scoped to the *resolved* database, so that two installs never cross and
every process of one install finds the others whatever its working directory:

- :class:`SocketBus` (SQLite: every process on one machine): Unix datagram sockets in Linux's
  abstract namespace, named after :func:`database_identity` (the absolute path of the file);
- :class:`PgNotifyBus` (PostgreSQL: processes on any number of machines): ``LISTEN``/``NOTIFY``
  on two channels of the database itself (notifications never leave the database they are
  sent in), one the hubs listen on and one the workers listen on. Each
  process holds one listening connection (its own thread) and one sending connection (a thread
  that sends what is pending, so a caller never waits on the database); a dropped connection
  is opened again with backoff, and meanwhile the process relies on polling.
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
from typing import Any, Protocol

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
    """This process's end of the install's wake-up channel (``hub`` or a worker role):
    LISTEN/NOTIFY on PostgreSQL (any number of machines), abstract sockets on SQLite."""
    if sa.make_url(database_url).get_backend_name() == "postgresql":
        return PgNotifyBus(database_url, role)
    return SocketBus(database_identity(database_url), role)


HUB_ROLES = ("hub", "sender")
HUB_CHANNEL = "genhook_hub"
WORKER_CHANNEL = "genhook_workers"
"""PostgreSQL's notifications are scoped to the database they are sent in, so these names
cannot cross installs: two databases never hear each other, and every process of one install
hears the others whatever host name or address its URL uses for the server."""


class PgNotifyBus:
    """A :class:`WakeupChannel` over PostgreSQL ``LISTEN``/``NOTIFY``.

    The hubs (API processes) listen on the install's hub channel, workers on its workers
    channel; a notification's payload is ``message sender`` (the sender's role and pid). A
    ``broadcast`` reaches every worker on every machine; ``to_hub`` reaches every API process.
    Sends are queued (the same hint pending twice is sent once) and sent by a thread of the
    bus's own, so that an accept path never waits on a round trip to the database.
    """

    RECONNECT_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)

    def __init__(self, database_url: str, role: str) -> None:
        self.url = _libpq_url(database_url)
        self.hub_channel, self.worker_channel = HUB_CHANNEL, WORKER_CHANNEL
        self.role = role
        # a sender process hears what the hubs hear ("delivery": the outbox has work)
        self.listens = self.hub_channel if role in HUB_ROLES else self.worker_channel
        self.me = f"{role}:{os.getpid()}"
        self._handlers: dict[bytes, Callable[[bytes], None]] = {}
        self._pending: dict[tuple[str, bytes], None] = {}
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._threads = [
            threading.Thread(target=self._listen, name=f"genhook-listen-{role}", daemon=True),
            threading.Thread(target=self._send_loop, name=f"genhook-notify-{role}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @property
    def active(self) -> bool:
        """True while the listening connection is open (else polling alone)."""
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        """Wait until the channel listens (tests, and start-ups that want hints at once)."""
        return self._listening.wait(timeout)

    def on(self, message: bytes, handler: Callable[[bytes], None]) -> None:
        """Call ``handler(sender)`` for each ``message`` received."""
        self._handlers[message] = handler

    def to_hub(self, message: bytes) -> None:
        """A hint to every API process of the install."""
        self._queue(self.hub_channel, message)

    def broadcast(self, message: bytes) -> None:
        """A hint to every worker process of the install, on any machine."""
        self._queue(self.worker_channel, message)

    def close(self) -> None:
        """Stop listening and sending."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(2.0)

    def _queue(self, channel: str, message: bytes) -> None:
        if message == b"hello":
            return  # a LISTEN registers by itself: nobody needs to be told who is there
        with self._wake:
            self._pending[(channel, message)] = None
            self._wake.notify()

    def _send_loop(self) -> None:
        import psycopg

        conn: psycopg.Connection[Any] | None = None
        failures = 0
        while not self._stop.is_set():
            with self._wake:
                while not self._pending and not self._stop.is_set():
                    self._wake.wait(1.0)
                batch, self._pending = list(self._pending), {}
            if not batch:
                continue
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                for channel, message in batch:
                    payload = f"{message.decode()} {self.me}"
                    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                failures = 0
            except Exception as exc:  # hints only: drop them, the pollers catch up
                failures += 1
                if failures == 1:
                    log.info("wake-up hints not sent (%s); relying on polling", exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                self._stop.wait(self._backoff(failures))
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _listen(self) -> None:
        import psycopg

        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'LISTEN "{self.listens}"')
                    self._listening.set()
                    if failures:
                        log.info("wake-ups back on %s", self.listens)
                    failures = 0
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._deliver(note.payload)
            except Exception as exc:
                self._listening.clear()
                failures += 1
                if failures == 1:
                    log.info("wake-ups off (%s); relying on polling", exc)
                self._stop.wait(self._backoff(failures))
        self._listening.clear()

    def _deliver(self, payload: str) -> None:
        message, _, sender = payload.partition(" ")
        handler = self._handlers.get(message.encode())
        if handler is None:
            return
        try:
            handler(sender.encode())
        except Exception:
            log.exception("wake-up handler failed")

    def _backoff(self, failures: int) -> float:
        steps = self.RECONNECT_SECONDS
        return steps[min(failures, len(steps)) - 1]


def _libpq_url(url: str) -> str:
    """``url`` as libpq takes it: a conninfo string of its parts and query parameters, each
    quoted by psycopg. (Rendered back as a URL, SQLAlchemy writes a space in the query as
    ``+``, which libpq keeps: an ``options=-c%20...`` parameter, as docs/operations.md shows,
    failed every wake-up connection.) A parameter given twice counts once, its last value,
    but ``options``, whose values are joined as the store's engine joins them."""
    from psycopg.conninfo import make_conninfo

    parsed = sa.make_url(url)
    params: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    for key, value in parsed.query.items():
        if isinstance(value, tuple):
            value = " ".join(value) if key == "options" else value[-1]
        params[key] = value
    return make_conninfo(**params)


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
