"""The delivery outbox: lease due deliveries, log attempts, list them, replay one."""

from __future__ import annotations

import sqlalchemy as sa

from genhook.store.base import Row, StoreBase
from genhook.store.schema import deliveries, delivery_attempts, services


class DeliveryStore(StoreBase):
    """Deliveries of completion payloads and every attempt at them."""

    def claim_deliveries(self, limit: int, lease_seconds: float) -> list[Row]:
        """Lease up to ``limit`` due deliveries (and ones whose sender died), with secrets."""
        now = self.clock.now()
        with self._write() as conn:
            stale = sa.and_(deliveries.c.status == "sending", deliveries.c.lease_expires < now)
            due = sa.and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
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
                deliveries.update()
                .where(deliveries.c.id.in_(ids))
                .values(status="sending", lease_expires=now + lease_seconds)
            )
            rows = conn.execute(
                sa.select(deliveries, services.c.webhook_secret)
                .join(services, services.c.id == deliveries.c.service_id)
                .where(deliveries.c.id.in_(ids))
            ).mappings()
            return [dict(r) for r in rows]

    def next_delivery_at(self) -> float | None:
        """When the earliest pending delivery falls due."""
        with self._read() as conn:
            value = conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status == "pending"
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
        manual: bool = False,
    ) -> None:
        """Log one attempt and move the delivery on: delivered, pending again, or failed."""
        now = self.clock.now()
        if outcome == "delivered":
            status = "delivered"
        elif next_attempt_at is None:
            status = "failed"
        else:
            status = "pending"
        with self._write() as conn:
            conn.execute(
                delivery_attempts.insert().values(
                    delivery_id=delivery_id,
                    number=number,
                    at=now,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration_ms,
                    manual=manual,
                )
            )
            conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id)
                .values(
                    status=status,
                    attempts=number,
                    next_attempt_at=next_attempt_at,
                    lease_expires=None,
                    delivered_at=now if status == "delivered" else None,
                    last_status_code=status_code,
                    last_error=error,
                )
            )

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
                .where(deliveries.c.id == delivery_id, deliveries.c.status != "sending")
                .values(status="pending", next_attempt_at=now, lease_expires=None)
            ).rowcount
        return bool(done)
