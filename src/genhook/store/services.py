"""Requesting services: creation (the API key shown once, stored hashed), key look-up, and what
an operator changes later: limits, the API key, the webhook signing secret.

A rotated key must stop working at once, also in an API process that cached the old key's
look-up (see :mod:`genhook.api.auth`). The store keeps a *key epoch*, a counter that every
change to a service's key or settings raises after its transaction commits; the API tags each
cached look-up with the epoch it read before looking up, and a cached entry whose epoch is not
the current one is looked up again. Where the database is a SQLite file, every process that can
open it is on this machine, so the epoch lives in a small file beside it
(``genhook.db-key-epoch``), mapped into memory: reading it costs nanoseconds, not a query. Other
databases (PostgreSQL: processes on other machines) have no shared memory to ask, so
:meth:`ServiceStore.key_epoch` answers None there and the API looks each key up in the database.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genhook.config_values import parse_duration, parse_rate
from genhook.delivery.signing import new_secret
from genhook.errors import ErrorCode, GenhookError
from genhook.ids import new_id
from genhook.store.base import StoreBase
from genhook.store.records import Service
from genhook.store.schema import claimable, jobs, services

log = logging.getLogger(__name__)

ON_BUDGET = ("hold", "fail")
"""What a job that the daily budget cannot cover does: wait for the next day, or fail."""
SETTINGS = ("rate_limit", "daily_budget", "on_budget", "queue_limit", "sandbox", "retention")
"""The service settings an operator sets at creation and changes with ``update_service``."""
EPOCH_SUFFIX = "-key-epoch"
"""The key epoch's file: the SQLite database's name plus this."""


def key_hash(api_key: str) -> str:
    """The stored form of an API key: SHA-256 (keys are long random tokens, so this is safe)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    """A fresh API key: ``gh_`` and 43 URL-safe characters (256 random bits)."""
    return "gh_" + secrets.token_urlsafe(32)


def check_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` checked: each a known setting with a usable value (``ValueError`` naming the
    flag and what it accepts otherwise). None clears ``rate_limit``, ``daily_budget`` and
    ``queue_limit`` (no limit, no budget, the default queue limit)."""
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        if name not in SETTINGS:
            raise ValueError(f"not a service setting: {name!r}")
        if name == "rate_limit" and value is not None:
            parse_rate(value)
        elif name == "daily_budget" and value is not None:
            value = float(value)
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"{flag}: must be a number of credits, 0 or more")
        elif name == "queue_limit" and value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag}: must be a whole number, 1 or more")
        elif name == "on_budget" and value not in ON_BUDGET:
            raise ValueError(f"{flag}: must be hold or fail, not {value!r}")
        elif name == "sandbox":
            value = bool(value)
        elif name == "retention" and value is not None:
            value = str(value).strip()
            if not parse_duration(value) > 0:
                raise ValueError(f"{flag}: must be a positive duration, e.g. 30d or 12h")
        checked[name] = value
    return checked


def not_found(name: str) -> GenhookError:
    return GenhookError(ErrorCode.SERVICE_NOT_FOUND, f"no service named {name!r}")


class FileEpoch:
    """A counter in a file, mapped into memory: raised by one process, seen by every process of
    this machine at its next read (they share the page cache). A raise takes the file's lock and
    writes through the file itself, so two raises never give one value."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)  # zeros; a count already there (or being made) stays
            self._map: mmap.mmap | None = mmap.mmap(fd, 8, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)  # the mapping keeps its own reference

    def read(self) -> int:
        if self._map is None:
            raise ValueError("key epoch closed")
        return int.from_bytes(self._map[:8], "little")

    def bump(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            value = int.from_bytes(os.pread(fd, 8, 0).ljust(8, b"\0"), "little") + 1
            os.pwrite(fd, value.to_bytes(8, "little"), 0)
            return value
        finally:
            os.close(fd)  # and with it the lock

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


class LocalEpoch:
    """The epoch of an in-memory database: no other process can open it."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    def read(self) -> int:
        return self._value

    def bump(self) -> int:
        with self._lock:
            self._value += 1
            return self._value

    def close(self) -> None:
        return


def open_epoch(engine: sa.Engine) -> FileEpoch | LocalEpoch | None:
    """The key epoch of ``engine``'s database: a file beside a SQLite file, an in-process
    counter for an in-memory one, None for any other database (or a file that cannot be made).
    """
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:":
        return LocalEpoch()
    if database.startswith("file:"):
        return None  # a URI filename: its path is not plain; ask the database instead
    path = Path(database).resolve()
    try:
        return FileEpoch(path.with_name(path.name + EPOCH_SUFFIX))
    except OSError as exc:
        log.warning("key epoch file unavailable (%s): keys are looked up per request", exc)
        return None


_EPOCH_LOCK = threading.Lock()


class ServiceStore(StoreBase):
    """Services and their credentials."""

    _key_epoch: FileEpoch | LocalEpoch | None

    @property
    def _epoch(self) -> FileEpoch | LocalEpoch | None:
        try:
            return self._key_epoch
        except AttributeError:
            with _EPOCH_LOCK:
                if not hasattr(self, "_key_epoch"):
                    self._key_epoch = open_epoch(self.engine)
            return self._key_epoch

    def close(self) -> None:
        """Also unmap the key epoch (a look-up after this asks the database)."""
        super().close()
        with _EPOCH_LOCK:
            epoch, self._key_epoch = getattr(self, "_key_epoch", None), None
        if epoch is not None:
            epoch.close()

    def key_epoch(self) -> int | None:
        """The key epoch now: a cached key look-up made at another epoch must be made again.
        None: this database has no shared epoch, so a look-up cannot be trusted past its
        request (PostgreSQL)."""
        epoch = self._epoch
        return None if epoch is None else epoch.read()

    def services_changed(self) -> None:
        """Raise the key epoch: call after committing any change to a service's row that the
        API reads from a cached look-up (its key, settings, pause), so the next request sees it.
        """
        epoch = self._epoch
        if epoch is not None:
            epoch.bump()

    def create_service(
        self,
        name: str,
        *,
        rate_limit: str | None = None,
        daily_budget: float | None = None,
        on_budget: str = "hold",
        queue_limit: int | None = None,
        sandbox: bool = False,
        retention: str | None = None,
    ) -> dict[str, str]:
        """A new requesting service; its API key is returned here once and stored hashed."""
        settings = check_settings(
            {
                "rate_limit": rate_limit,
                "daily_budget": daily_budget,
                "on_budget": on_budget,
                "queue_limit": queue_limit,
                "sandbox": sandbox,
                "retention": retention,
            }
        )
        api_key = new_api_key()
        service_id = new_id("svc")
        secret = new_secret()
        try:
            with self._write() as conn:
                conn.execute(
                    services.insert().values(
                        id=service_id,
                        name=name,
                        api_key_hash=key_hash(api_key),
                        api_key_prefix=api_key[:10],
                        webhook_secret=secret,
                        created_at=self.clock.now(),
                        **settings,
                    )
                )
        except IntegrityError as exc:
            raise ValueError(f"a service named {name!r} already exists") from exc
        return {
            "service": name,
            "service_id": service_id,
            "api_key": api_key,
            "webhook_secret": secret,
        }

    def service_for_key(self, api_key: str) -> Service | None:
        """The service owning ``api_key``, read from the database every time: a cache here
        would keep a revoked key working (the API keeps its own, checked against
        :meth:`key_epoch`)."""
        digest = key_hash(api_key)
        with self._read() as conn:
            row = (
                conn.execute(sa.select(services).where(services.c.api_key_hash == digest))
                .mappings()
                .first()
            )
        return None if row is None else Service.from_row(row)

    def service_by_name(self, name: str) -> Service | None:
        """The service called ``name``, or None."""
        with self._read() as conn:
            row = conn.execute(_by_name(name)).mappings().first()
        return None if row is None else Service.from_row(row)

    def list_services(self) -> list[Service]:
        """Every service, by name."""
        with self._read() as conn:
            rows = conn.execute(sa.select(services).order_by(services.c.name)).mappings().all()
        return [Service.from_row(row) for row in rows]

    def update_service(self, name: str, **changes: Any) -> Service:
        """Change the settings named in ``changes`` (the others stay); the service as it is now.
        ``service_not_found`` for an unknown name, ``ValueError`` for a bad setting."""
        checked = check_settings(changes)
        with self._write() as conn:
            if checked:
                done = conn.execute(
                    services.update().where(services.c.name == name).values(**checked)
                )
                if done.rowcount == 0:
                    raise not_found(name)
            row = conn.execute(_by_name(name)).mappings().first()
            if row is None:
                raise not_found(name)
            if {"daily_budget", "on_budget"} & set(checked):
                # a raised (or removed) budget: the jobs it held look again now
                now = self.clock.now()
                conn.execute(
                    jobs.update()
                    .where(
                        jobs.c.service_id == row["id"],
                        claimable(),
                        jobs.c.hold_reason == "budget",
                    )
                    .values(hold_reason=None, run_after=now, updated_at=now)
                )
        if checked:
            self.services_changed()
        return Service.from_row(row)

    def rotate_key(self, name: str) -> dict[str, str]:
        """A new API key for ``name``, returned once; the old one stops working when this
        returns, in every process (the key epoch is raised after the commit)."""
        api_key = new_api_key()
        with self._write() as conn:
            done = conn.execute(
                services.update()
                .where(services.c.name == name)
                .values(
                    api_key_hash=key_hash(api_key),
                    api_key_prefix=api_key[:10],
                    key_rotated_at=self.clock.now(),
                )
            )
            if done.rowcount == 0:
                raise not_found(name)
        self.services_changed()
        return {"service": name, "api_key": api_key}

    def rotate_secret(self, name: str, overlap_seconds: float) -> dict[str, Any]:
        """A new webhook signing secret for ``name``. The one it replaces keeps signing beside
        it for ``overlap_seconds`` (``previous_secret`` until ``previous_secret_until``; 0: not
        at all); a secret rotated again during an overlap drops the oldest one."""
        if not overlap_seconds >= 0:
            raise ValueError("--overlap: must be 0 or more")
        secret = new_secret()
        with self._write() as conn:
            row = conn.execute(_by_name(name)).mappings().first()
            if row is None:
                raise not_found(name)
            until = self.clock.now() + overlap_seconds if overlap_seconds > 0 else None
            conn.execute(
                services.update()
                .where(services.c.id == row["id"])
                .values(
                    webhook_secret=secret,
                    previous_secret=row["webhook_secret"] if until is not None else None,
                    previous_secret_until=until,
                )
            )
        self.services_changed()
        return {"service": name, "webhook_secret": secret, "previous_secret_until": until}


def _by_name(name: str) -> sa.Select[Any]:
    return sa.select(services).where(services.c.name == name)
