"""The delivery outbox: lease due deliveries, log attempts, list them, replay one.

Every attempt is in the log before its request goes out: the claim that leases a delivery also
writes its attempt row (state ``sending``), and the answer completes that row (``done``). An
attempt whose sender died stays in the log as ``interrupted`` (the receiver may have got it) when
another outbox takes the delivery over. A lease is held by one outbox (``lease_owner``); only
the holder can move the delivery on, and an outbox renews the leases of what it has in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import sqlalchemy as sa

from genhook.status import DeliveryAttemptState, DeliveryStatus
from genhook.store.base import Row, StoreBase
from genhook.store.records import Delivery
from genhook.store.schema import deliveries, delivery_attempts, jobs, services

INTERRUPTED = "the sender stopped before the answer was recorded; the receiver may have got it"


class DeliveryStore(StoreBase):
    """Deliveries of completion payloads and every attempt at them."""

    def claim_deliveries(self, limit: int, lease_seconds: float, owner: str = "") -> list[Delivery]:
        """Lease up to ``limit`` due deliveries (and ones whose sender died) to ``owner``.

        Each comes back with its new attempt's number (already logged as ``sending``), the
        service's ``webhook_secret`` and the trigger's ``callback_private``.
        """
        now = self.clock.now()
        with self._write() as conn:
            stale = sa.and_(
                deliveries.c.status == DeliveryStatus.SENDING, deliveries.c.lease_expires <= now
            )
            due = sa.and_(
                deliveries.c.status == DeliveryStatus.PENDING, deliveries.c.next_attempt_at <= now
            )
            ids = list(
                conn.execute(
                    sa.select(deliveries.c.id)
                    .where(sa.or_(due, stale))
                    .order_by(deliveries.c.next_attempt_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            if not ids:
                return []
            conn.execute(
                delivery_attempts.update()
                .where(
                    delivery_attempts.c.delivery_id.in_(ids),
                    delivery_attempts.c.state == DeliveryAttemptState.SENDING,
                )
                .values(state=DeliveryAttemptState.INTERRUPTED, error=INTERRUPTED)
            )
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids))
                .values(
                    status=DeliveryStatus.SENDING,
                    attempts=deliveries.c.attempts + 1,
                    lease_expires=now + lease_seconds,
                    lease_owner=owner or None,
                )
            )
            rows = [
                Delivery.from_row(r)
                for r in conn.execute(
                    sa.select(deliveries, services.c.webhook_secret, jobs.c.callback_private)
                    .join(services, services.c.id == deliveries.c.service_id)
                    .join(jobs, jobs.c.id == deliveries.c.job_id)
                    .where(deliveries.c.id.in_(ids))
                ).mappings()
            ]
            conn.execute(
                delivery_attempts.insert(),
                [
                    {
                        "delivery_id": r.id,
                        "number": r.attempt,
                        "at": now,
                        "state": DeliveryAttemptState.SENDING,
                    }
                    for r in rows
                ],
            )
            return rows

    def renew_deliveries(self, ids: Collection[str], owner: str, lease_seconds: float) -> int:
        """Extend ``owner``'s leases on ``ids``; how many it still held."""
        if not ids:
            return 0
        now = self.clock.now()
        with self._write() as conn:
            return conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.id.in_(list(ids)),
                    deliveries.c.status == DeliveryStatus.SENDING,
                    deliveries.c.lease_owner == owner,
                )
                .values(lease_expires=now + lease_seconds)
            ).rowcount

    def expire_dead_leases(self, is_dead: Callable[[str], bool]) -> int:
        """End the leases of owners that ``is_dead`` says are gone, so they are claimed at once."""
        now = self.clock.now()
        with self._write() as conn:
            owners = conn.execute(
                sa.select(deliveries.c.lease_owner)
                .where(
                    deliveries.c.status == DeliveryStatus.SENDING,
                    deliveries.c.lease_owner.is_not(None),
                )
                .distinct()
            ).scalars()
            dead = [owner for owner in owners if is_dead(owner)]
            if not dead:
                return 0
            return conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.status == DeliveryStatus.SENDING,
                    deliveries.c.lease_owner.in_(dead),
                )
                .values(lease_expires=now)
            ).rowcount

    def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery falls due."""
        with self._read() as conn:
            value = conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status == DeliveryStatus.PENDING
                )
            ).scalar()
        return float(value) if value is not None else None

    def record_delivery(
        self,
        delivery_id: str,
        *,
        number: int,
        status_code: int | None,
        error: str | None,
        duration_ms: float,
        outcome: str,
        next_attempt_at: float | None,
        owner: str = "",
    ) -> bool:
        """Complete attempt ``number`` and move the delivery on: delivered, pending or failed.

        The attempt's row is completed in any case (it is what happened); the delivery moves on
        only while ``owner`` still holds its lease (False otherwise: another outbox took it over).
        """
        now = self.clock.now()
        if outcome == "delivered":
            status = DeliveryStatus.DELIVERED
        elif next_attempt_at is None:
            status = DeliveryStatus.FAILED
        else:
            status = DeliveryStatus.PENDING
        with self._write() as conn:
            conn.execute(
                delivery_attempts.update()
                .where(
                    delivery_attempts.c.delivery_id == delivery_id,
                    delivery_attempts.c.number == number,
                )
                .values(
                    state=DeliveryAttemptState.DONE,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                )
            )
            moved = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.id == delivery_id,
                    deliveries.c.status == DeliveryStatus.SENDING,
                    deliveries.c.lease_owner.is_(None)
                    if not owner
                    else deliveries.c.lease_owner == owner,
                )
                .values(
                    status=status,
                    next_attempt_at=next_attempt_at,
                    lease_expires=None,
                    lease_owner=None,
                    delivered_at=now if status is DeliveryStatus.DELIVERED else None,
                    last_status_code=status_code,
                    last_error=error,
                )
            ).rowcount
        return bool(moved)

    def deliveries(self, job_id: str) -> list[Row]:
        """A job's deliveries, each with its attempts (no body)."""
        with self._read() as conn:
            rows = [
                dict(r)
                for r in conn.execute(
                    sa.select(deliveries).where(deliveries.c.job_id == job_id)
                ).mappings()
            ]
            ids = [r["id"] for r in rows]
            tried = conn.execute(
                sa.select(delivery_attempts)
                .where(delivery_attempts.c.delivery_id.in_(ids))
                .order_by(delivery_attempts.c.delivery_id, delivery_attempts.c.number)
            ).mappings()
            by_id: dict[str, list[Row]] = {i: [] for i in ids}
            for attempt in tried:
                by_id[attempt["delivery_id"]].append(dict(attempt))
        for row in rows:
            row["attempt_log"] = by_id[row["id"]]
        return rows

    def delivery(self, delivery_id: str) -> Row | None:
        """One delivery by id."""
        with self._read() as conn:
            row = (
                conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))
                .mappings()
                .first()
            )
        return dict(row) if row else None

    def replay(self, delivery_id: str) -> bool:
        """Queue a manual resend of a delivery now; False while an attempt is in flight."""
        now = self.clock.now()
        with self._write() as conn:
            done = conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.id == delivery_id, deliveries.c.status != DeliveryStatus.SENDING
                )
                .values(
                    status=DeliveryStatus.PENDING,
                    next_attempt_at=now,
                    lease_expires=None,
                    lease_owner=None,
                )
            ).rowcount
        return bool(done)
