"""Health and readiness of every genhook role, and the bound of its graceful shutdown.

One set of checks for the three roles: the API serves them as routes (``GET /healthz``, ``GET
/readyz``, :mod:`genhook.api.meta`), and ``genhook worker`` and ``genhook sender`` serve the
same two routes, with the same JSON, on ``--health-port`` (:class:`HealthServer`):

- ``/healthz``: 200 when the database answers and can write now, else 503 with the reason;
- ``/readyz``: 200 when this process can take work now: the store answers, at least one backend
  that an installed workflow uses is ready (the API and workers; a sender needs none), and the
  process is not shutting down; else 503 with the reason. While it shuts down it answers
  ``shutting_down`` at once, without asking the store, so a load balancer or an orchestrator
  stops sending it work first thing.

The health server is the standard library's ``ThreadingHTTPServer`` on a thread of its own,
not a second uvicorn: a worker has no event loop to put one on, two routes need no framework,
it binds in a millisecond and costs an idle thread. Checks run one at a time (a probe storm
holds one database connection, which the role's pool counts).

:class:`Shutdown` is a process's graceful shutdown: begun by its first SIGTERM or SIGINT, it
gives every part of the process the same deadline (``GENHOOK_SHUTDOWN_SECONDS`` from the
signal); a second signal exits at once (:class:`Signals`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from genhook.backends.base import BackendStatus, probe
from genhook.flow import Breaker, BreakerState

if TYPE_CHECKING:
    from genhook.runtime import Runtime
    from genhook.store.base import Health

log = logging.getLogger("genhook.health")

Answer = tuple[int, dict[str, Any]]
"""An HTTP status and its JSON body."""

SHUTTING_DOWN = "shutting_down"
"""``/readyz``'s reason while the process shuts down."""


class HealthStore(Protocol):
    """What the checks ask the store."""

    def health(self) -> Health: ...

    def breakers(self) -> dict[str, Breaker]: ...


class Shutdown:
    """A process's graceful shutdown: not begun, or begun with a deadline ``seconds`` later.

    Parts of the process register what to do when it begins (:meth:`on_begin`: stop claiming,
    stop accepting) and bound their waits by :meth:`remaining`.
    """

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = max(0.0, seconds)
        self._begun = threading.Event()
        self._deadline: float | None = None
        self._hooks: list[Callable[[], None]] = []
        self._force_hooks: list[Callable[[], None]] = []
        # reentrant: `serve` begins the shutdown in uvicorn's signal handler, which may
        # interrupt this thread inside on_begin
        self._lock = threading.RLock()

    @property
    def stopping(self) -> bool:
        """True once the shutdown has begun."""
        return self._begun.is_set()

    def on_begin(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when the shutdown begins (at once if it has)."""
        with self._lock:
            if not self._begun.is_set():
                self._hooks.append(hook)
                return
        _call(hook)

    def on_force(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` if the shutdown is forced (a second signal), just before the exit."""
        with self._lock:
            self._force_hooks.append(hook)

    def force(self) -> None:
        """Run the hooks of a forced shutdown (the caller exits at once afterwards)."""
        with self._lock:
            hooks = list(self._force_hooks)
        for hook in hooks:
            _call(hook)

    def begin(self) -> bool:
        """Begin the shutdown (its deadline starts now); False if it had begun already."""
        with self._lock:
            if self._begun.is_set():
                return False
            self._deadline = time.monotonic() + self.seconds
            self._begun.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            _call(hook)
        return True

    def remaining(self) -> float:
        """Seconds left until the deadline (the whole bound while not begun)."""
        deadline = self._deadline
        if deadline is None:
            return self.seconds
        return max(0.0, deadline - time.monotonic())

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the shutdown begins; whether it has."""
        return self._begun.wait(timeout)


def _call(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:
        log.exception("shutdown step failed")


FORCED_EXIT = 128
"""A second signal exits at once with 128 + its number (130 for SIGINT, 143 for SIGTERM)."""


class Signals:
    """SIGTERM and SIGINT for a process whose main thread waits on them (``genhook worker``).

    The handler takes no lock (it may interrupt the main thread while that holds one, and a
    lock taken again by the same thread would never come free): it counts the signal and
    writes a byte to a pipe, which :meth:`wait` selects on; the main thread then begins the
    shutdown itself. A second signal forces the shutdown (:meth:`Shutdown.force`) and exits at
    once, from the handler. What was leased then stays leased until the lease runs out, as
    after a crash, so the store stays consistent.

    ``repeat_forces=False`` (a worker of ``genhook serve``): every signal is the graceful one.
    Such a worker can get SIGTERM twice in a row, from its ``serve`` and from a service manager
    that signals the whole process tree (systemd's default ``KillMode``); its ``serve`` kills it
    to force its exit.
    """

    def __init__(self, shutdown: Shutdown, *, repeat_forces: bool = True) -> None:
        self.shutdown = shutdown
        self.repeat_forces = repeat_forces
        self.received = 0
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received += 1  # handlers run in the main thread, one at a time
        if self.received > 1 and self.repeat_forces:
            self.shutdown.force()
            os._exit(FORCED_EXIT + signum)
        with contextlib.suppress(OSError):
            os.write(self._write, b"!")

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a signal; once one came, begin the shutdown (here,
        not in the handler) and return True."""
        if not self.received:
            with contextlib.suppress(InterruptedError):
                select.select([self._read], [], [], timeout)
        if not self.received:
            return False
        self.shutdown.begin()
        return True


def healthz(store: HealthStore) -> Answer:
    """200 when the database answers and can write now (a rolled-back probe write, and no
    recent failed write), else 503 with the reason: a full or read-only store is not healthy."""
    health = store.health()
    body: dict[str, Any] = {
        "status": "ok" if health.ok else "unavailable",
        "database": health.answers,
        "writable": health.writable,
    }
    if not health.ok:
        body["reason"] = health.reason
    return (200 if health.ok else 503), body


# a backend's probe answer is kept this long: /readyz is polled often, engines are not hammered
READY_PROBE_TTL = 10.0
_probes: dict[str, tuple[float, BackendStatus]] = {}
_probes_lock = threading.Lock()


def _backend_ready(runtime: Runtime, name: str, breakers: dict[str, Breaker]) -> BackendStatus:
    """Is ``name`` ready: installed, its breaker closed, and answering its probe (cached)."""
    state = breakers.get(name)
    if state is not None and state.state is BreakerState.OPEN:
        return BackendStatus(False, f"its breaker is open after {state.failures} failures")
    now = time.monotonic()
    with _probes_lock:
        cached = _probes.get(name)
    if cached is not None and now - cached[0] < READY_PROBE_TTL:
        return cached[1]
    backend = runtime.engine.backends.find(name)
    status = BackendStatus(False, "not installed") if backend is None else probe(backend)
    with _probes_lock:
        _probes[name] = (now, status)
    return status


STORAGE_PROBE_TIMEOUT = 3.0
"""Seconds the asset storage's readiness check may take (one request, not retried)."""
_storage_probe: dict[int, tuple[float, tuple[bool, str]]] = {}


def _storage_ready(runtime: Runtime) -> tuple[bool, str]:
    """Can this process write assets now (the storage's own probe, cached like a backend's)."""
    storage = runtime.storage
    now = time.monotonic()
    with _probes_lock:
        cached = _storage_probe.get(id(storage))
    if cached is not None and now - cached[0] < READY_PROBE_TTL:
        return cached[1]
    found = storage.probe(STORAGE_PROBE_TIMEOUT)
    with _probes_lock:
        _storage_probe[id(storage)] = (now, found)
    return found


def readiness(
    runtime: Runtime,
    store: HealthStore,
    *,
    role: str = "api",
    backends: bool = True,
    storage: bool = True,
    shutdown: Shutdown | None = None,
) -> Answer:
    """``/readyz``: whether this process can take work now, and why not: it is not shutting
    down, the store answers and can write, (``storage``) the asset storage can be written,
    and (``backends``) at least one backend that an installed workflow uses is ready."""
    if shutdown is not None and shutdown.stopping:
        return 503, {"status": "unavailable", "reason": SHUTTING_DOWN, "role": role}
    health = store.health()
    body: dict[str, Any] = {"role": role, "store": {"ok": health.ok, "reason": health.reason}}
    if not health.ok:
        return 503, {**body, "status": "unavailable", "reason": f"store: {health.reason}"}
    if storage:
        writable, detail = _storage_ready(runtime)
        body["storage"] = {"ok": writable, "detail": detail}
        if not writable:
            return 503, {**body, "status": "unavailable", "reason": f"storage: {detail}"}
    if backends:
        breakers = store.breakers()
        used = sorted({wf.backend for wf in runtime.catalog.workflows.values()})
        found = {name: _backend_ready(runtime, name, breakers) for name in used}
        body["backends"] = {n: {"ready": s.ready, "detail": s.detail} for n, s in found.items()}
        if found and not any(s.ready for s in found.values()):
            reasons = "; ".join(f"{n}: {s.detail}" for n, s in found.items())
            return 503, {
                **body,
                "status": "unavailable",
                "reason": f"no backend is ready ({reasons})",
            }
    return 200, {**body, "status": "ready"}


class HealthServer:
    """``GET /healthz`` and ``GET /readyz`` (and ``HEAD``) of a worker or sender process, on a
    thread of its own. Bound when made, so a busy port fails at start-up; serving from
    :meth:`start`."""

    def __init__(self, host: str, port: int) -> None:
        self._checks: dict[str, Callable[[], Answer]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.server = ThreadingHTTPServer((host, port), self._handler(), bind_and_activate=False)
        self.server.daemon_threads = True
        try:
            self.server.server_bind()
            self.server.server_activate()
        except OSError:
            self.server.server_close()
            raise

    @property
    def port(self) -> int:
        """The port bound (the one asked for, or the free one picked for port 0)."""
        return int(self.server.server_address[1])

    def start(self, healthz: Callable[[], Answer], readyz: Callable[[], Answer]) -> None:
        """Answer the two routes with these checks from now on."""
        self._checks = {"/healthz": healthz, "/readyz": readyz}
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="genhook-health", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop answering and release the port."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(5)
        self.server.server_close()

    def answer(self, path: str) -> Answer:
        """The answer to ``GET path``: a check's, or 404."""
        check = self._checks.get(path.split("?", 1)[0])
        if check is None:
            return 404, {"error_code": "not_found", "error_description": "no such route"}
        try:
            with self._lock:  # one check at a time: one database connection
                return check()
        except Exception as exc:  # a check must answer, not drop the connection
            log.exception("health check %s failed", path)
            return 503, {"status": "unavailable", "reason": f"check failed: {exc}"[:300]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "genhook"
            sys_version = ""

            def do_GET(self) -> None:
                self._reply(body=True)

            def do_HEAD(self) -> None:
                self._reply(body=False)

            def _reply(self, *, body: bool) -> None:
                status, data = owner.answer(self.path)
                encoded = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(encoded)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                if body:
                    self.wfile.write(encoded)

            def log_message(self, *args: Any) -> None:
                return

        return Handler
