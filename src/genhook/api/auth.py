"""Bearer API keys: each names one requesting service.

Looking a key up is a database read; a busy service sends the same key on every request, so the
answers are kept in a small cache: bounded (least recently used entries go first) and
short-lived (``KEY_CACHE_SECONDS``). Unknown keys are never cached: a key created a moment ago
works at once. A rotated key stops working at once, in every process: each entry is tagged with
the store's key epoch (:meth:`~genhook.store.services.ServiceStore.key_epoch`, read before the
look-up), which every rotation and settings change raises after its commit, and an entry of
another epoch is looked up again. Reading the epoch is a read of shared memory on SQLite; where
the store has no epoch (PostgreSQL), every request looks its key up. The TTL stays as a
backstop (a process that died between its commit and the raise).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.security import HTTPBearer

from genhook.clock import Clock
from genhook.errors import ErrorCode, GenhookError
from genhook.runtime import Runtime
from genhook.store.ports import ApiStore
from genhook.store.records import Service
from genhook.store.services import key_hash

KEY_CACHE_SECONDS = 5.0
"""How long a looked-up key is trusted without asking the database again."""
KEY_CACHE_ENTRIES = 1024
"""At most this many keys are cached (one per active service is the usual need)."""

bearer = HTTPBearer(
    auto_error=False,
    description="A service's API key (`genhook services create`).",
)
"""Declares the scheme in the OpenAPI document; ``service_of`` does the checking."""


class KeyCache:
    """Services by key hash: at most ``max_entries``, each trusted for ``ttl`` seconds and only
    while the key epoch is the one it was looked up at."""

    def __init__(
        self,
        clock: Clock,
        *,
        max_entries: int = KEY_CACHE_ENTRIES,
        ttl: float = KEY_CACHE_SECONDS,
    ) -> None:
        self._clock = clock
        self._max = max_entries
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, int | None, Service]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str, epoch: int | None = None) -> Service | None:
        """The cached service, or None when absent, older than the TTL or looked up at another
        key epoch than ``epoch`` (then dropped)."""
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[1] != epoch or self._clock.now() - entry[0] >= self._ttl:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[2]

    def put(self, digest: str, service: Service, epoch: int | None = None) -> None:
        """Remember ``service``, looked up at key epoch ``epoch``; the least recently used entry
        goes when the cache is full."""
        with self._lock:
            self._entries[digest] = (self._clock.now(), epoch, service)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every key (after a change made in this process)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


_STATE_LOCK = threading.Lock()
T = TypeVar("T")


def state_part(app: FastAPI, name: str, make: Callable[[], T]) -> T:
    """``app.state.<name>``, made by ``make()`` on first use (one per app, thread-safe)."""
    with _STATE_LOCK:
        part: T | None = getattr(app.state, name, None)
        if part is None:
            part = make()
            setattr(app.state, name, part)
        return part


def key_cache(app: FastAPI) -> KeyCache:
    """The app's key cache, on the runtime's clock."""
    return state_part(app, "key_cache", lambda: KeyCache(app.state.runtime.clock))


def runtime_of(request: Request) -> Runtime:
    """The process's runtime, set on the app at start-up."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def api_store(runtime: Runtime) -> ApiStore:
    """The runtime's store as the API may use it: the :class:`~genhook.store.ports.ApiStore`
    port, so mypy refuses a route that reaches for a worker's or the outbox's part."""
    return runtime.store


def service_of(request: Request) -> Service:
    """The calling service, from ``Authorization: Bearer <api_key>``; 401 without a valid one."""
    return service_for(request.app, request.headers.get("authorization", ""))


def _token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GenhookError(ErrorCode.UNAUTHORIZED, "send Authorization: Bearer <api_key>")
    return token.strip()


def cached_service(app: FastAPI, header: str) -> Service | None:
    """The service of an ``Authorization`` header if its key is in the cache (no database
    read: fit for the event loop), None when only :func:`service_for` can tell; 401 for a
    header that names no bearer key at all."""
    token = _token(header)
    epoch = api_store(app.state.runtime).key_epoch()
    if epoch is None:
        return None
    return key_cache(app).get(key_hash(token), epoch)


def service_for(app: FastAPI, header: str) -> Service:
    """The service of an ``Authorization`` header's bearer key (cached, else looked up)."""
    token = _token(header)
    store = api_store(app.state.runtime)
    epoch = store.key_epoch()  # before the look-up: a rotation after it raises the epoch
    if epoch is None:  # no shared epoch: only the database knows whether the key still holds
        return _look_up(store, token)
    cache = key_cache(app)
    digest = key_hash(token)
    service = cache.get(digest, epoch)
    if service is None:
        service = _look_up(store, token)
        cache.put(digest, service, epoch)
    return service


def _look_up(store: ApiStore, token: str) -> Service:
    service = store.service_for_key(token)
    if service is None:
        raise GenhookError(ErrorCode.UNAUTHORIZED, "unknown API key")
    return service


class _Owned(Protocol):
    """A record that belongs to a service (a job, a delivery)."""

    @property
    def service_id(self) -> str | None: ...


_O = TypeVar("_O", bound=_Owned)


def owned(job: _O | None, service: Service, what: str = "job") -> _O:
    """``job`` if the service owns it: 404 when missing, 403 when another service's."""
    if job is None:
        raise GenhookError(ErrorCode.NOT_FOUND, f"no such {what}")
    if job.service_id != service.id:
        raise GenhookError(ErrorCode.FORBIDDEN, f"this {what} belongs to another service")
    return job
