"""Retention: ended jobs, their payloads and their assets are kept for their service's retention
(``genhook services create/update NAME --retention 30d``, else ``GENHOOK_RETENTION``, 30 days),
then purged.

A :class:`Purger` pass, per service: the service's ended jobs that finished longer ago than its
retention, and owe no callback (a delivery pending or being sent keeps its job), are removed in
batches of at most ``GENHOOK_PURGE_BATCH`` jobs, one short transaction each, with a pause between
batches so that the accept path and the workers never wait long behind it (see
:mod:`genhook.store.retention` for what one batch removes and how purgers in many processes
share the work). After each batch commits, the purged jobs' asset files are deleted
(``storage.delete_job``) and their tombstones marked; a tombstone whose assets are still marked
to do (the process died in between, or the storage refused) is retried at the start of every
pass. Tombstones are kept :data:`TOMBSTONE_SECONDS` (a year): meanwhile ``GET /v1/jobs/{id}``
answers ``410 job_expired`` and the job's asset URLs ``410 asset_expired``; after it, 404.

After a service's jobs, its batches: a batch that ended longer ago than the retention, whose
jobs are all purged and whose batch callback is not owed, goes in bounded transactions too (with
its callback's delivery log), a tombstone in its place (``GET /v1/batches/{id}``: ``410
batch_expired`` for a year).

The API process (``genhook serve``) and ``genhook sender`` run a pass every
``GENHOOK_PURGE_INTERVAL`` (10 minutes), the first shortly after they start; ``genhook purge``
runs one now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from genhook.errors import ErrorCode, GenhookError
from genhook.store.retention import PURGED_TABLES, PurgedBatch, PurgedJob

log = logging.getLogger("genhook.retention")

TOMBSTONE_SECONDS = 365 * 86400.0
"""How long a purged job's tombstone answers 410 before its URLs answer 404."""
BATCH_PAUSE_SECONDS = 0.05
"""The pause between two purge batches: other writers take the database meanwhile."""
FIRST_PASS_DELAY = 5.0
"""Seconds after start-up before a process's first pass (at most its interval)."""


class AssetStorage(Protocol):
    """What the purge needs of asset storage: delete one job's files, idempotently."""

    def delete_job(self, job_id: str) -> None: ...


class TombstoneStore(Protocol):
    """What the API asks retention: was this job purged?"""

    def purged_job(self, job_id: str) -> PurgedJob | None: ...

    def purged_batch(self, batch_id: str) -> PurgedBatch | None: ...


@dataclass
class PurgeReport:
    """What one pass removed (or, dry, would remove)."""

    dry_run: bool = False
    removed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PURGED_TABLES, 0))
    batches: int = 0  # transactions
    batches_removed: int = 0  # batch rows (removed["batches"])
    assets_deleted: int = 0
    assets_failed: int = 0
    tombstones_forgotten: int = 0
    services: dict[str, int] = field(default_factory=dict)  # jobs per service name

    def add(self, counts: dict[str, Any]) -> None:
        for table in PURGED_TABLES:
            self.removed[table] += int(counts.get(table, 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "jobs": self.removed["jobs"],
            "removed": {**self.removed, "batches": self.batches_removed},
            "batches": self.batches,
            "assets_deleted": self.assets_deleted,
            "assets_failed": self.assets_failed,
            "tombstones_forgotten": self.tombstones_forgotten,
            "services": dict(self.services),
        }


class Purger:
    """One purge pass at a time over every service (see the module's docstring)."""

    def __init__(
        self,
        store: Any,
        storage: AssetStorage,
        *,
        default_seconds: float,
        batch: int = 500,
        pause: float = BATCH_PAUSE_SECONDS,
        tombstone_seconds: float = TOMBSTONE_SECONDS,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.default_seconds = default_seconds
        self.batch = max(1, batch)
        self.pause = pause
        self.tombstone_seconds = tombstone_seconds
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait

    @classmethod
    def for_runtime(cls, runtime: Any) -> Purger:
        settings = runtime.settings
        return cls(
            runtime.store,
            runtime.storage,
            default_seconds=settings.retention_seconds,
            batch=settings.purge_batch,
        )

    def stop(self) -> None:
        """End the pass in progress after its current batch (and any later pass at once)."""
        self._stop.set()

    def run_once(self, *, dry_run: bool = False) -> PurgeReport:
        """One pass now: leftover asset deletions first, then each service's expired jobs in
        batches, then tombstones older than a year. ``dry_run``: count only."""
        report = PurgeReport(dry_run=dry_run)
        now = self.store.clock.now()
        policies = self.store.retention_policies(self.default_seconds)
        if dry_run:
            for policy in policies:
                counts = self.store.count_expired(policy.service_id, now - policy.seconds)
                report.add(counts)
                if counts["jobs"]:
                    report.services[policy.service] = counts["jobs"]
                gone = self.store.count_expired_batches(policy.service_id, now - policy.seconds)
                report.add(gone)
                report.batches_removed += gone["batches"]
            return report
        self._delete_leftover_assets(report)
        for policy in policies:
            cutoff = now - policy.seconds
            while not self._stop.is_set():
                counts = self.store.purge_batch(policy.service_id, cutoff, self.batch)
                ids: list[str] = counts["job_ids"]
                if not ids:
                    break
                report.batches += 1
                report.add(counts)
                report.services[policy.service] = report.services.get(policy.service, 0) + len(ids)
                self._delete_assets(ids, report)
                if len(ids) < self.batch:
                    break
                if self.pause > 0:
                    self._sleep(self.pause)
            self._purge_batches(policy.service_id, cutoff, report)
        if not self._stop.is_set():
            report.tombstones_forgotten = self._forget(now - self.tombstone_seconds)
        if report.removed["jobs"] or report.assets_failed:
            log.info("purge: %s", report.as_dict())
        return report

    def _purge_batches(self, service_id: str, cutoff: float, report: PurgeReport) -> None:
        """The service's batches whose jobs are all gone (after its jobs, in the same pass)."""
        while not self._stop.is_set():
            counts = self.store.purge_batches(service_id, cutoff, self.batch)
            ids: list[str] = counts["batch_ids"]
            if not ids:
                return
            report.batches += 1
            report.batches_removed += int(counts["batches"])
            report.add(counts)  # their callbacks' deliveries and attempt log
            if len(ids) < self.batch:
                return
            if self.pause > 0:
                self._sleep(self.pause)

    def _delete_assets(self, job_ids: list[str], report: PurgeReport) -> None:
        done = []
        for job_id in job_ids:
            if self._stop.is_set():  # shutting down: the rest stay marked, for the next pass
                break
            try:
                self.storage.delete_job(job_id)
            except Exception as exc:  # the storage refused: retried at the next pass
                report.assets_failed += 1
                log.warning("purge: the assets of %s were not deleted (%s)", job_id, exc)
            else:
                done.append(job_id)
        report.assets_deleted += len(done)
        self.store.assets_deleted(done)

    def _delete_leftover_assets(self, report: PurgeReport) -> None:
        """Tombstones whose assets are still to delete: a pass that died after its commit, or a
        storage that refused. ``delete_job`` is idempotent, so a purger running beside this one
        deleting the same files does no harm."""
        tried: set[str] = set()
        while not self._stop.is_set():
            ids = [i for i in self.store.assets_to_delete(self.batch) if i not in tried]
            if not ids:
                return
            tried.update(ids)
            self._delete_assets(ids, report)

    def _forget(self, before: float) -> int:
        """Tombstones of jobs, then of batches, purged before ``before``: how many jobs'."""
        total = 0
        for forget in (self.store.forget_purged, self.store.forget_purged_batches):
            while not self._stop.is_set():
                n = int(forget(before, self.batch))
                if forget == self.store.forget_purged:
                    total += n
                if n < self.batch:
                    break
                if self.pause > 0:
                    self._sleep(self.pause)
        return total


async def purge_loop(purger: Purger, interval: float, stop: asyncio.Event) -> None:
    """Run a pass every ``interval`` seconds until ``stop``; each pass in a thread, so the event
    loop (the API, the outbox) never waits on it. A failed pass (the store down) is logged and
    tried again at the next interval."""
    delay = min(FIRST_PASS_DELAY, interval)
    while True:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except TimeoutError:
            pass
        try:
            await asyncio.to_thread(purger.run_once)
        except GenhookError as exc:
            log.warning("purge: pass failed (%s); next in %.0f s", exc, interval)
        except Exception:
            log.exception("purge: pass failed; next in %.0f s", interval)
        delay = interval


@contextlib.asynccontextmanager
async def background_purge(runtime: Any) -> AsyncIterator[Purger]:
    """The process's purge loop, from start-up until the block ends (``GENHOOK_PURGE_INTERVAL``);
    leaving it stops the pass in progress after its current batch."""
    purger = Purger.for_runtime(runtime)
    stop = asyncio.Event()
    task = asyncio.create_task(purge_loop(purger, runtime.settings.purge_interval, stop))
    try:
        yield purger
    finally:
        stop.set()
        purger.stop()
        await task


def _gone(tombstone: Any, owner: Callable[[Any], Any], code: ErrorCode, why: str) -> None:
    """Raise ``410 code`` for a tombstone the caller owns (``owner`` raises 403 otherwise);
    return for none (the caller answers 404)."""
    if tombstone is None:
        return
    owner(tombstone)
    raise GenhookError(code, why)


def expired_job(store: TombstoneStore, job_id: str, owner: Callable[[PurgedJob], Any]) -> None:
    """For a job id the store does not have: raise ``410 job_expired`` if retention purged it
    (``owner`` first checks the tombstone's service is the caller's: 403 otherwise); return
    when it never existed (the caller answers 404)."""
    _gone(
        store.purged_job(job_id),
        owner,
        ErrorCode.JOB_EXPIRED,
        "this job ended longer ago than its service's retention; it was purged with its "
        "payload and assets",
    )


def expired_batch(
    store: TombstoneStore, batch_id: str, owner: Callable[[PurgedBatch], Any]
) -> None:
    """The same for a batch id: ``410 batch_expired`` if retention purged the batch."""
    _gone(
        store.purged_batch(batch_id),
        owner,
        ErrorCode.BATCH_EXPIRED,
        "this batch ended longer ago than its service's retention; it was purged after its jobs",
    )


def expired_asset(store: TombstoneStore, job_id: str) -> GenhookError:
    """The error for an asset that is not there: ``410 asset_expired`` when its job was
    purged, else ``404 not_found``."""
    if store.purged_job(job_id) is not None:
        return GenhookError(
            ErrorCode.ASSET_EXPIRED,
            "this asset's job ended longer ago than its service's retention; its files are deleted",
        )
    return GenhookError(ErrorCode.NOT_FOUND, "no such asset")
