"""The delivery outbox: lease due deliveries, log attempts, list them, replay one.

Every attempt is in the log before its request goes out: the claim that leases a delivery also
writes its attempt row (state ``sending``), and the answer completes that row (``done``). An
attempt whose sender died stays in the log as ``interrupted`` (the receiver may have got it) when
another outbox takes the delivery over. A lease is held by one outbox (``lease_owner``); only
the holder can move the delivery on, and an outbox renews the leases of what it has in flight.

Isolation: a claim leases only what fits under two caps on attempts in flight, counted across
every outbox (deliveries ``sending`` under a live lease): ``delivery_per_service`` per service
and ``delivery_per_endpoint`` per endpoint (``scheme://host:port``). A claim serves services in
turns (every service's first due delivery, then every service's second, ...), so one service's
backlog or retries never fill a claim. On PostgreSQL claims take a transaction-scoped advisory
lock, so two outboxes cannot both see room under a cap and both fill it (SQLite's ``BEGIN
IMMEDIATE`` serialises them already).

The endpoint breaker (:mod:`genhook.delivery.breaker`) is applied as each callback attempt is
recorded; a disabled endpoint's deliveries are never claimed. A callback that used up its
schedule sends ``delivery.exhausted`` in the transaction that marks it failed; an operator
event's own delivery (kind ``alert``) never does, and never counts against an endpoint.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from genhook.delivery.breaker import (
    EndpointBreaker,
    EndpointEvent,
    EndpointPolicy,
    EndpointState,
    decide,
    failing_long,
)
from genhook.errors import ErrorCode, GenhookError
from genhook.status import DeliveryAttemptState, DeliveryOutcome, DeliveryStatus
from genhook.store.base import Row, StoreBase
from genhook.store.ops_events import ALERT, OperatorEvent, endpoint_of, iso, record_event
from genhook.store.records import Delivery, DeliveryAttemptRecord, DeliveryRecord
from genhook.store.schema import (
    Time,
    deliveries,
    delivery_attempts,
    endpoints,
    jobs,
    services,
)

INTERRUPTED = "the sender stopped before the answer was recorded; the receiver may have got it"
CLAIM_LOCK = 0x67686B64  # "ghkd": the advisory lock that serialises delivery claims (PostgreSQL)


Now = float | sa.BindParameter[float]


def _live(now: Now) -> sa.ColumnElement[bool]:
    """An attempt in flight: ``sending`` under a lease that has not run out."""
    return sa.and_(deliveries.c.status == DeliveryStatus.SENDING, deliveries.c.lease_expires > now)


def _claimable(now: Now) -> sa.ColumnElement[bool]:
    """Due (pending and its time has come) or abandoned (its sender's lease ran out), and not
    to a disabled endpoint."""
    due = sa.and_(
        deliveries.c.status == DeliveryStatus.PENDING, deliveries.c.next_attempt_at <= now
    )
    stale = sa.and_(
        deliveries.c.status == DeliveryStatus.SENDING, deliveries.c.lease_expires <= now
    )
    return sa.and_(sa.or_(due, stale), sa.not_(_disabled()))


def _disabled() -> sa.ColumnElement[bool]:
    return (
        sa.exists()
        .where(
            endpoints.c.service_id == deliveries.c.service_id,
            endpoints.c.endpoint == deliveries.c.endpoint,
            endpoints.c.state == EndpointState.DISABLED,
        )
        .correlate(deliveries)
    )


@functools.cache
def _pick_statement() -> sa.Select[Any]:
    """The claim's pick (see :meth:`DeliveryStore._pick`), built once: binds ``now``,
    ``limit``, ``per_endpoint`` and ``per_service``."""
    now = sa.bindparam("now", type_=Time)
    endpoint_key = sa.func.coalesce(deliveries.c.endpoint, deliveries.c.url)
    service_key = sa.func.coalesce(deliveries.c.service_id, sa.literal_column("''"))
    by_endpoint = (
        sa.select(endpoint_key.label("key"), sa.func.count().label("n"))
        .where(_live(now))
        .group_by(endpoint_key)
        .subquery()
    )
    by_service = (
        sa.select(service_key.label("key"), sa.func.count().label("n"))
        .where(_live(now))
        .group_by(service_key)
        .subquery()
    )
    # due and abandoned deliveries, each through its own partial index (not one OR over a scan)
    waiting = sa.union_all(
        sa.select(
            deliveries.c.id,
            service_key.label("service"),
            endpoint_key.label("endpoint"),
            deliveries.c.next_attempt_at.label("due_at"),
        ).where(
            deliveries.c.status == DeliveryStatus.PENDING,
            deliveries.c.next_attempt_at <= now,
            sa.not_(_disabled()),
        ),
        sa.select(
            deliveries.c.id,
            service_key.label("service"),
            endpoint_key.label("endpoint"),
            sa.func.coalesce(deliveries.c.next_attempt_at, deliveries.c.lease_expires).label(
                "due_at"
            ),
        ).where(
            deliveries.c.status == DeliveryStatus.SENDING,
            deliveries.c.lease_expires <= now,
            sa.not_(_disabled()),
        ),
    ).subquery()
    ready = sa.select(
        waiting,
        sa.func.row_number()
        .over(partition_by=waiting.c.endpoint, order_by=(waiting.c.due_at, waiting.c.id))
        .label("nth"),
    ).subquery()
    fits_endpoint = (
        sa.select(
            ready.c.id,
            ready.c.service,
            ready.c.due_at,
            sa.func.row_number()
            .over(partition_by=ready.c.service, order_by=(ready.c.due_at, ready.c.id))
            .label("turn"),
        )
        .select_from(ready.outerjoin(by_endpoint, by_endpoint.c.key == ready.c.endpoint))
        .where(
            ready.c.nth + sa.func.coalesce(by_endpoint.c.n, 0)
            <= sa.bindparam("per_endpoint", type_=sa.Integer)
        )
        .subquery()
    )
    return (
        sa.select(fits_endpoint.c.id)
        .select_from(
            fits_endpoint.outerjoin(by_service, by_service.c.key == fits_endpoint.c.service)
        )
        .where(
            fits_endpoint.c.turn + sa.func.coalesce(by_service.c.n, 0)
            <= sa.bindparam("per_service", type_=sa.Integer)
        )
        .order_by(fits_endpoint.c.turn, fits_endpoint.c.due_at, fits_endpoint.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


class DeliveryStore(StoreBase):
    """Deliveries of completion payloads and every attempt at them."""

    # attempts in flight at once, across every outbox (GENHOOK_DELIVERY_PER_SERVICE, ..._ENDPOINT)
    delivery_per_service: int = 16
    delivery_per_endpoint: int = 8
    # the endpoint breaker (GENHOOK_ENDPOINT_DISABLE_AFTER, GENHOOK_ENDPOINT_DISABLE_DELIVERIES)
    endpoint_disable_seconds: float = 6 * 3600.0
    endpoint_disable_deliveries: int = 10

    @property
    def endpoint_policy(self) -> EndpointPolicy:
        return EndpointPolicy(self.endpoint_disable_seconds, self.endpoint_disable_deliveries)

    def claim_deliveries(self, limit: int, lease_seconds: float, owner: str = "") -> list[Delivery]:
        """Lease up to ``limit`` due deliveries (and ones whose sender died) to ``owner``, fairly
        across services and within the in-flight caps.

        Each comes back with its new attempt's number (already logged as ``sending``), the
        service's secrets and the trigger's ``callback_private``.
        """
        now = self.clock.now()
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK)))
            picked = self._pick(conn, limit, now)
            if not picked:
                return []
            ids = list(
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_(picked), _claimable(now))
                    .values(
                        status=DeliveryStatus.SENDING,
                        attempts=deliveries.c.attempts + 1,
                        lease_expires=now + lease_seconds,
                        lease_owner=owner or None,
                    )
                    .returning(deliveries.c.id)
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
            found = {
                r["id"]: Delivery.from_row(r, now=now)
                for r in conn.execute(
                    sa.select(
                        deliveries,
                        services.c.webhook_secret,
                        services.c.previous_secret,
                        services.c.previous_secret_until,
                        jobs.c.callback_private,
                    )
                    .outerjoin(services, services.c.id == deliveries.c.service_id)
                    .outerjoin(jobs, jobs.c.id == deliveries.c.job_id)
                    .where(deliveries.c.id.in_(ids))
                ).mappings()
            }
            rows = [found[i] for i in picked if i in found]  # in the claim's fair order
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

    def _pick(self, conn: sa.Connection, limit: int, now: float) -> list[str]:
        """The ids a claim takes: claimable, within both in-flight caps, services in turns.

        Per endpoint, its claimable deliveries in due order are numbered 1, 2, ...; those whose
        number plus the endpoint's attempts in flight is over ``delivery_per_endpoint`` stay.
        The rest are numbered per service, and the same rule with ``delivery_per_service``
        applies. The survivors are taken by that number first (each service's first, then
        each one's second, ...), then by due time. An operator event (no service) counts as
        its own service.
        """
        return list(
            conn.execute(
                _pick_statement(),
                {
                    "now": now,
                    "limit": limit,
                    "per_endpoint": self.delivery_per_endpoint,
                    "per_service": self.delivery_per_service,
                },
            ).scalars()
        )

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

    def next_delivery_at(self, after: float | None = None) -> float | None:
        """When the earliest pending delivery falls due (only those due after ``after``, when
        given: a claim at ``after`` left the others for their caps). One to a disabled endpoint
        waits for an operator, not for a time."""
        with self._read() as conn:
            value = conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status == DeliveryStatus.PENDING,
                    sa.true() if after is None else deliveries.c.next_attempt_at > after,
                    sa.not_(_disabled()),
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
        outcome: DeliveryOutcome,
        next_attempt_at: float | None,
        owner: str = "",
    ) -> bool:
        """Complete attempt ``number`` and move the delivery on: delivered, pending or failed.

        The attempt's row is completed in any case (it is what happened); the delivery moves on
        only while ``owner`` still holds its lease (False otherwise: another outbox took it over).
        Moving a callback on also feeds its endpoint's breaker (which may disable the endpoint:
        ``endpoint.disabled``), and one that failed for good after its last scheduled attempt
        sends ``delivery.exhausted``, both in the same transaction.
        """
        now = self.clock.now()
        if outcome is DeliveryOutcome.DELIVERED:
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
            if moved:
                self._after_attempt(conn, delivery_id, number, outcome, status, now)
        return bool(moved)

    def _after_attempt(
        self,
        conn: sa.Connection,
        delivery_id: str,
        number: int,
        outcome: DeliveryOutcome,
        status: DeliveryStatus,
        now: float,
    ) -> None:
        """A callback's attempt has moved it on: feed the breaker; report an exhausted one."""
        row = (
            conn.execute(
                sa.select(
                    deliveries.c.kind,
                    deliveries.c.job_id,
                    deliveries.c.service_id,
                    deliveries.c.endpoint,
                    deliveries.c.url,
                    deliveries.c.attempts,
                    deliveries.c.last_status_code,
                    deliveries.c.last_error,
                    delivery_attempts.c.at.label("started_at"),
                    services.c.name.label("service"),
                )
                .join(services, services.c.id == deliveries.c.service_id)
                .outerjoin(
                    delivery_attempts,
                    sa.and_(
                        delivery_attempts.c.delivery_id == deliveries.c.id,
                        delivery_attempts.c.number == number,
                    ),
                )
                .where(deliveries.c.id == delivery_id)
            )
            .mappings()
            .first()
        )
        if row is None or row["kind"] == ALERT:
            return  # an operator event's delivery: no breaker, no event about itself
        endpoint = row["endpoint"] or endpoint_of(row["url"])
        started = float(row["started_at"] if row["started_at"] is not None else now)
        self._feed_breaker(conn, row, endpoint, outcome is DeliveryOutcome.DELIVERED, started, now)
        if status is DeliveryStatus.FAILED and outcome is DeliveryOutcome.RETRY:
            record_event(
                conn,
                event=OperatorEvent.DELIVERY_EXHAUSTED,
                service=row["service"],
                details={
                    "delivery_id": delivery_id,
                    "job_id": row["job_id"],
                    "endpoint": endpoint,
                    "attempts": int(row["attempts"]),
                    "last_status_code": row["last_status_code"],
                    "last_error": row["last_error"],
                },
                now=now,
                alert_url=self.alert_url,
            )

    def _feed_breaker(
        self,
        conn: sa.Connection,
        row: Any,
        endpoint: str,
        ok: bool,
        started: float,
        now: float,
    ) -> None:
        service_id = row["service_id"]
        key = sa.and_(endpoints.c.service_id == service_id, endpoints.c.endpoint == endpoint)
        if ok:  # the common case: one conditional update, a no-op unless it was failing
            conn.execute(
                endpoints.update()
                .where(key, endpoints.c.failing_since.is_not(None))
                .values(failing_since=None, failed_attempts=0, updated_at=now)
            )
            return
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        conn.execute(
            dialect.insert(endpoints)
            .values(service_id=service_id, endpoint=endpoint, updated_at=now)
            .on_conflict_do_nothing(index_elements=["service_id", "endpoint"])
        )
        kept = conn.execute(sa.select(endpoints).where(key).with_for_update()).mappings().one()
        state = EndpointBreaker(
            EndpointState(kept["state"]),
            kept["failing_since"],
            int(kept["failed_attempts"]),
            kept["disabled_at"],
        )
        policy = self.endpoint_policy
        since = state.failing_since if state.failing_since is not None else started
        counted = 0
        if state.state is EndpointState.ENABLED and failing_long(
            EndpointBreaker(failing_since=since), now, policy
        ):
            counted = self._failing_deliveries(conn, service_id, endpoint, since)
        decision = decide(state, EndpointEvent("failed", started, counted), now, policy)
        after = decision.state
        conn.execute(
            endpoints.update()
            .where(key)
            .values(
                state=after.state,
                failing_since=after.failing_since,
                failed_attempts=after.failed_attempts,
                disabled_at=after.disabled_at,
                updated_at=now,
            )
        )
        if decision.disabled:
            record_event(
                conn,
                event=OperatorEvent.ENDPOINT_DISABLED,
                service=row["service"],
                details={
                    "endpoint": endpoint,
                    "failing_since": iso(since),
                    "failed_attempts": after.failed_attempts,
                    "failed_deliveries": counted,
                },
                now=now,
                alert_url=self.alert_url,
            )

    def _failing_deliveries(
        self, conn: sa.Connection, service_id: str, endpoint: str, since: float
    ) -> int:
        """Different deliveries to ``endpoint`` with an attempt done since ``since`` (all failed:
        a success would have reset the breaker)."""
        return int(
            conn.execute(
                sa.select(sa.func.count(sa.distinct(delivery_attempts.c.delivery_id)))
                .select_from(
                    delivery_attempts.join(
                        deliveries, deliveries.c.id == delivery_attempts.c.delivery_id
                    )
                )
                .where(
                    deliveries.c.service_id == service_id,
                    deliveries.c.endpoint == endpoint,
                    delivery_attempts.c.at >= since,
                    delivery_attempts.c.state == DeliveryAttemptState.DONE,
                )
            ).scalar_one()
        )

    def endpoints(self) -> list[Row]:
        """Every callback endpoint the breaker knows (one that failed at least once), with its
        service's name and how many of its deliveries wait; disabled first."""
        waiting = (
            sa.select(sa.func.count())
            .where(
                deliveries.c.service_id == endpoints.c.service_id,
                deliveries.c.endpoint == endpoints.c.endpoint,
                deliveries.c.status == DeliveryStatus.PENDING,
            )
            .correlate(endpoints)
            .scalar_subquery()
        )
        with self._read() as conn:
            rows = conn.execute(
                sa.select(endpoints, services.c.name.label("service"), waiting.label("waiting"))
                .join(services, services.c.id == endpoints.c.service_id)
                .order_by(
                    (endpoints.c.state == EndpointState.DISABLED).desc(),
                    services.c.name,
                    endpoints.c.endpoint,
                )
            ).mappings()
            return [dict(r) for r in rows]

    def enable_endpoint(self, service: str, endpoint: str) -> Row | None:
        """Enable ``service``'s ``endpoint`` and make its waiting deliveries due now (the
        replay); its failure count starts afresh. None when no service has that name.
        ``{"service", "endpoint", "state", "was_disabled", "replayed"}``."""
        now = self.clock.now()
        with self._write() as conn:
            service_id = conn.execute(
                sa.select(services.c.id).where(services.c.name == service)
            ).scalar()
            if service_id is None:
                return None
            key = sa.and_(endpoints.c.service_id == service_id, endpoints.c.endpoint == endpoint)
            row = conn.execute(sa.select(endpoints).where(key).with_for_update()).mappings().first()
            was = EndpointBreaker(EndpointState(row["state"])) if row else EndpointBreaker()
            decision = decide(was, EndpointEvent("enabled"), now, self.endpoint_policy)
            replayed = 0
            if row is not None:
                conn.execute(
                    endpoints.update()
                    .where(key)
                    .values(
                        state=decision.state.state,
                        failing_since=None,
                        failed_attempts=0,
                        disabled_at=None,
                        updated_at=now,
                    )
                )
            if decision.replay:
                replayed = conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.service_id == service_id,
                        deliveries.c.endpoint == endpoint,
                        deliveries.c.status == DeliveryStatus.PENDING,
                    )
                    .values(next_attempt_at=now)
                ).rowcount
        return {
            "service": service,
            "endpoint": endpoint,
            "state": str(EndpointState.ENABLED),
            "was_disabled": decision.replay,
            "replayed": replayed,
        }

    def deliveries(self, job_id: str) -> list[DeliveryRecord]:
        """A job's deliveries, each with its attempts."""
        with self._read() as conn:
            rows = list(
                conn.execute(sa.select(deliveries).where(deliveries.c.job_id == job_id)).mappings()
            )
            ids = [r["id"] for r in rows]
            tried = conn.execute(
                sa.select(delivery_attempts)
                .where(delivery_attempts.c.delivery_id.in_(ids))
                .order_by(delivery_attempts.c.delivery_id, delivery_attempts.c.number)
            ).mappings()
            by_id: dict[str, list[DeliveryAttemptRecord]] = {i: [] for i in ids}
            for attempt in tried:
                by_id[attempt["delivery_id"]].append(DeliveryAttemptRecord.from_row(attempt))
        return [DeliveryRecord.from_row(r, tuple(by_id[r["id"]])) for r in rows]

    def delivery(self, delivery_id: str) -> DeliveryRecord | None:
        """One delivery by id."""
        with self._read() as conn:
            row = (
                conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))
                .mappings()
                .first()
            )
        return DeliveryRecord.from_row(row) if row else None

    def replay(self, delivery_id: str) -> bool:
        """Queue a manual resend of a delivery now; False while an attempt is in flight.
        ``endpoint_disabled`` while its endpoint is disabled (it would only wait)."""
        now = self.clock.now()
        with self._write() as conn:
            if conn.execute(
                sa.select(deliveries.c.id).where(deliveries.c.id == delivery_id, _disabled())
            ).first():
                raise GenhookError(
                    ErrorCode.ENDPOINT_DISABLED,
                    "this callback's endpoint is disabled (it failed every attempt for hours); "
                    "its deliveries wait until an operator enables it",
                )
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
