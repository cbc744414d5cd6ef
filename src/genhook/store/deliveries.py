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
IMMEDIATE`` serialises them already). A claim costs a few index seeks per (service, endpoint)
with due deliveries, whatever the backlog: only the first ``delivery_per_endpoint`` of each pair
can fit, and ``ix_deliveries_pending_pair`` finds them.

Batches: :meth:`DeliveryStore.record_and_claim` records an outbox's answers and leases its next
deliveries in one transaction (one commit for a turn of many), applying the answers in order.

The endpoint breaker (:mod:`genhook.delivery.breaker`) is applied as each callback attempt is
recorded; a disabled endpoint's deliveries are never claimed. A callback that used up its
schedule sends ``delivery.exhausted`` in the transaction that marks it failed; an operator
event's own delivery (kind ``alert``) never does, and never counts against an endpoint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
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
    batches,
    deliveries,
    delivery_attempts,
    endpoints,
    jobs,
    services,
)

INTERRUPTED = "the sender stopped before the answer was recorded; the receiver may have got it"
CLAIM_LOCK = 0x67686B64  # "ghkd": the advisory lock that serialises delivery claims (PostgreSQL)


Now = float | sa.BindParameter[float]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one attempt came to, to be recorded: attempt ``number`` of ``delivery_id`` ended
    with ``outcome``; ``next_attempt_at`` is when to try again (None: no further attempt)."""

    delivery_id: str
    number: int
    outcome: DeliveryOutcome
    status_code: int | None
    error: str | None
    duration_ms: float
    next_attempt_at: float | None

    @property
    def status(self) -> DeliveryStatus:
        """Where the delivery goes: delivered, pending (a retry is due) or failed for good."""
        if self.outcome is DeliveryOutcome.DELIVERED:
            return DeliveryStatus.DELIVERED
        if self.next_attempt_at is None:
            return DeliveryStatus.FAILED
        return DeliveryStatus.PENDING


def _literal(value: StrEnum) -> sa.ColumnElement[str]:
    """A state written into the SQL, not bound. SQLite decides whether a partial index serves
    ``status = ?`` from the bound value, and so prepares such a statement again whenever it is
    bound again: every execution, for the claim's large statements."""
    return sa.literal_column(f"'{value}'", sa.String)


def _live(now: Now) -> sa.ColumnElement[bool]:
    """An attempt in flight: ``sending`` under a lease that has not run out."""
    return sa.and_(
        deliveries.c.status == _literal(DeliveryStatus.SENDING), deliveries.c.lease_expires > now
    )


def _claimable(now: Now) -> sa.ColumnElement[bool]:
    """Due (pending and its time has come) or abandoned (its sender's lease ran out), and not
    to a disabled endpoint."""
    due = sa.and_(
        deliveries.c.status == _literal(DeliveryStatus.PENDING), deliveries.c.next_attempt_at <= now
    )
    stale = sa.and_(
        deliveries.c.status == _literal(DeliveryStatus.SENDING), deliveries.c.lease_expires <= now
    )
    return sa.and_(sa.or_(due, stale), sa.not_(_disabled()))


def _disabled(of: Any = deliveries) -> sa.ColumnElement[bool]:
    """``of``'s (a delivery's, or a (service, endpoint) pair's) endpoint is disabled."""
    return (
        sa.exists()
        .where(
            endpoints.c.service_id == of.c.service_id,
            endpoints.c.endpoint == of.c.endpoint,
            endpoints.c.state == _literal(EndpointState.DISABLED),
        )
        .correlate(of)
    )


def _pairs() -> sa.CTE:
    """Every (service, endpoint) with a pending delivery, found one after another through
    ``ix_deliveries_pending_pair`` (a skip scan: one index seek per pair, whatever the backlog):
    each service's endpoints in order, and those of operator events (no service) alike."""
    d = deliveries.alias("d")

    def first_after(service: sa.ColumnElement[Any] | None, after: Any) -> Any:
        owner = d.c.service_id.is_(None) if service is None else d.c.service_id == service
        beyond = sa.true() if after is None else d.c.endpoint > after
        return (
            sa.select(sa.func.min(d.c.endpoint))
            .where(d.c.status == _literal(DeliveryStatus.PENDING), owner, beyond)
            .scalar_subquery()
        )

    seed = sa.select(
        services.c.id.label("service_id"), first_after(services.c.id, None).label("endpoint")
    ).cte("pair", recursive=True)
    alerts = sa.select(sa.null(), first_after(None, None))
    p = seed.alias("p")
    step = sa.select(
        p.c.service_id,
        sa.case(
            (p.c.service_id.is_(None), first_after(None, p.c.endpoint)),
            else_=first_after(p.c.service_id, p.c.endpoint),
        ),
    ).where(p.c.endpoint.is_not(None))
    return seed.union_all(alerts, step)


def _pending_candidates(dialect: str, now: Now, per_endpoint: Any) -> list[sa.Select[Any]]:
    """The due pending deliveries a claim may take: of every (service, endpoint) whose endpoint
    is not disabled for that service, its first ``per_endpoint`` in due order (no later one can
    fit under the endpoint's cap: ``per_endpoint`` of the same endpoint come before it).
    One seek and a short walk of ``ix_deliveries_pending_pair`` per pair."""
    pair = _pairs()
    c = deliveries.alias("c")
    selects = []
    for alerts in (False, True):
        owner = c.c.service_id.is_(None) if alerts else c.c.service_id == pair.c.service_id
        of_pair: list[sa.ColumnElement[bool]] = [
            pair.c.endpoint.is_not(None),
            pair.c.service_id.is_(None) if alerts else pair.c.service_id.is_not(None),
        ]
        if not alerts:
            of_pair.append(sa.not_(_disabled(pair)))
        first = (
            sa.select(c.c.id, c.c.service_id, c.c.endpoint, c.c.next_attempt_at)
            .where(
                c.c.status == _literal(DeliveryStatus.PENDING),
                owner,
                c.c.endpoint == pair.c.endpoint,
                c.c.next_attempt_at <= now,
            )
            .order_by(c.c.next_attempt_at, c.c.id)
            .limit(per_endpoint)
            .correlate(pair)
        )
        if dialect == "postgresql":  # straight from the index, per pair
            row: Any = first.lateral("top")
            joined = pair.join(row, sa.true())
        else:  # SQLite has no LATERAL: a correlated IN per pair, through the index
            row = deliveries
            joined = pair.join(deliveries, deliveries.c.id.in_(first.with_only_columns(c.c.id)))
        selects.append(
            sa.select(
                row.c.id,
                sa.func.coalesce(row.c.service_id, sa.literal_column("''")).label("service"),
                row.c.endpoint.label("endpoint"),
                row.c.next_attempt_at.label("due_at"),
                sa.literal_column("0").label("stale"),
            )
            .select_from(joined)
            .where(*of_pair)
        )
    return selects


@functools.cache
def _pick_statement(dialect: str) -> sa.Select[Any]:
    """The claim's pick (see :meth:`DeliveryStore._pick`), built once per dialect: binds
    ``now``, ``limit``, ``per_endpoint`` and ``per_service``."""
    now = sa.bindparam("now", type_=Time)
    per_endpoint = sa.bindparam("per_endpoint", type_=sa.Integer)
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
    # the candidates: due pending ones (a few per endpoint) and abandoned ones (sending under a
    # lease that ran out), each through its own partial index (not one OR over a scan)
    waiting = sa.union_all(
        *_pending_candidates(dialect, now, per_endpoint),
        sa.select(
            deliveries.c.id,
            service_key.label("service"),
            endpoint_key.label("endpoint"),
            sa.func.coalesce(deliveries.c.next_attempt_at, deliveries.c.lease_expires).label(
                "due_at"
            ),
            sa.literal_column("1").label("stale"),
        ).where(
            deliveries.c.status == _literal(DeliveryStatus.SENDING),
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
            ready.c.stale,
            sa.func.row_number()
            .over(partition_by=ready.c.service, order_by=(ready.c.due_at, ready.c.id))
            .label("turn"),
        )
        .select_from(ready.outerjoin(by_endpoint, by_endpoint.c.key == ready.c.endpoint))
        .where(ready.c.nth + sa.func.coalesce(by_endpoint.c.n, 0) <= per_endpoint)
        .subquery()
    )
    chosen = (
        sa.select(
            fits_endpoint.c.id, fits_endpoint.c.stale, fits_endpoint.c.turn, fits_endpoint.c.due_at
        )
        .select_from(
            fits_endpoint.outerjoin(by_service, by_service.c.key == fits_endpoint.c.service)
        )
        .where(
            fits_endpoint.c.turn + sa.func.coalesce(by_service.c.n, 0)
            <= sa.bindparam("per_service", type_=sa.Integer)
        )
        .order_by(fits_endpoint.c.turn, fits_endpoint.c.due_at, fits_endpoint.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
        .subquery("chosen")
    )
    # with what sending each needs: the row, its service's secrets, its trigger's policy
    return (
        sa.select(
            chosen.c.stale,
            deliveries,
            services.c.webhook_secret,
            services.c.previous_secret,
            services.c.previous_secret_until,
            # a batch callback (no job): the batch's policy, taken when it was accepted
            sa.func.coalesce(jobs.c.callback_private, batches.c.callback_private).label(
                "callback_private"
            ),
        )
        .select_from(
            chosen.join(deliveries, deliveries.c.id == chosen.c.id)
            .outerjoin(services, services.c.id == deliveries.c.service_id)
            .outerjoin(jobs, jobs.c.id == deliveries.c.job_id)
            .outerjoin(batches, batches.c.id == deliveries.c.batch_id)
        )
        .order_by(chosen.c.turn, chosen.c.due_at, chosen.c.id)
    )


@dataclass(frozen=True)
class _Compiled:
    """A statement compiled once for a dialect: the driver's SQL, the order of its positional
    parameters (None: named), and the values of the parameters the statement fixes itself."""

    sql: str
    names: tuple[str, ...] | None
    fixed: dict[str, Any]

    def __post_init__(self) -> None:
        # the positional values in one C call (itemgetter of one name gives a bare value)
        names = self.names or ()
        getter = operator.itemgetter(*names) if len(names) > 1 else None
        object.__setattr__(self, "_getter", getter)

    def args(self, params: dict[str, Any]) -> Any:
        values = {**self.fixed, **params} if self.fixed else params
        if self.names is None:
            return values
        getter = self._getter  # type: ignore[attr-defined]
        return getter(values) if getter is not None else tuple(values[n] for n in self.names)


_COMPILED: dict[tuple[Callable[[str], Any], str], _Compiled] = {}


def _compiled(conn: sa.Connection, build: Callable[[str], Any]) -> _Compiled:
    """``build(dialect)`` compiled once per dialect. The claim and the records run a few large
    statements per turn: SQLAlchemy's per-execution work (its cache key of the statement, the
    parameters of an expanding IN, result metadata) cost more than SQLite running them."""
    key = (build, conn.dialect.name)
    found = _COMPILED.get(key)
    if found is None:
        compiled = build(conn.dialect.name).compile(dialect=conn.dialect)
        fixed = {
            name: _plain(bind.effective_value)
            for name, bind in compiled.binds.items()
            if not bind.required
        }
        found = _COMPILED[key] = _Compiled(str(compiled), compiled.positiontup, fixed)
    return found


def _plain(value: Any) -> Any:
    """A value as the driver takes it: an enum's value (no result or bind types apply)."""
    return value.value if isinstance(value, Enum) else value


def _driver_call(conn: sa.Connection, sql: str, call: Callable[[Any], Any]) -> Any:
    """``call(cursor)`` on ``conn``'s own driver connection, inside its transaction. The turn's
    few statements skip SQLAlchemy's execution context and result objects (their cost per
    statement and per row was about a third of a turn's Python); a driver error comes out as
    SQLAlchemy's, as from ``conn.execute`` (so the store's edge maps it), and a connection the
    driver says is broken is invalidated, as SQLAlchemy does."""
    dbapi = conn.dialect.loaded_dbapi
    raw: Any = conn.connection.dbapi_connection  # a live connection inside a transaction
    cursor: Any = None
    try:
        cursor = raw.cursor()  # raises too on a connection the server has ended
        return call(cursor)
    except dbapi.Error as exc:
        broken = conn.dialect.is_disconnect(exc, raw, cursor)
        if broken:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql,
            None,
            exc,
            dbapi.Error,
            hide_parameters=True,
            connection_invalidated=broken,
            dialect=conn.dialect,
        ) from exc
    finally:
        if cursor is not None:
            with contextlib.suppress(dbapi.Error):  # closing a broken connection's cursor
                cursor.close()


def _run(
    conn: sa.Connection, build: Callable[[str], Any], params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run ``build``'s statement once; its rows (if any) as dicts of the driver's values."""
    statement = _compiled(conn, build)

    def call(cursor: Any) -> list[dict[str, Any]]:
        cursor.execute(statement.sql, statement.args(params))
        if cursor.description is None:
            return []
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    result: list[dict[str, Any]] = _driver_call(conn, statement.sql, call)
    return result


def _run_many(conn: sa.Connection, build: Callable[[str], Any], rows: list[dict[str, Any]]) -> None:
    """Run ``build``'s statement for each of ``rows`` (one executemany)."""
    statement = _compiled(conn, build)
    args = [statement.args(row) for row in rows]
    _driver_call(conn, statement.sql, lambda cursor: cursor.executemany(statement.sql, args))


def _in_ids(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[bool]:
    """``column`` is one of the list bound as ``ids`` (see :func:`_ids`): one parameter
    whatever its length, so the statement compiles once."""
    ids: sa.BindParameter[Any] = sa.bindparam("ids")
    if dialect == "postgresql":
        return column == sa.func.any(ids)
    return column.in_(sa.select(sa.literal_column("value")).select_from(sa.func.json_each(ids)))


def _ids(conn: sa.Connection, ids: Collection[str]) -> Any:
    """The value of ``ids`` for :func:`_in_ids`: an array on PostgreSQL, JSON on SQLite."""
    return list(ids) if conn.dialect.name == "postgresql" else json.dumps(list(ids))


# PostgreSQL: claims one at a time; and no JIT compiling for the claim's statements (the
# planner's guess of a recursive CTE's size can cross jit_above_cost: 100+ ms per claim)
_CLAIM_LOCK = sa.select(
    sa.func.pg_advisory_xact_lock(CLAIM_LOCK), sa.func.set_config("jit", "off", sa.true())
)


@functools.cache
def _lease_statement(dialect: str) -> sa.Update:
    """Lease the picked ``ids`` still claimable at ``now`` to ``owner`` until ``until``, each
    one attempt more; returns the ids leased."""
    return (
        deliveries.update()
        .where(
            _in_ids(deliveries.c.id, dialect),
            _claimable(sa.bindparam("now", type_=Time)),
        )
        .values(
            status=DeliveryStatus.SENDING,
            attempts=deliveries.c.attempts + 1,
            lease_expires=sa.bindparam("until", type_=Time),
            lease_owner=sa.bindparam("owner", type_=sa.String),
        )
        .returning(deliveries.c.id)
    )


@functools.cache
def _attempt_statement(dialect: str) -> sa.Insert:
    """Log one attempt as it starts (executed for many)."""
    return delivery_attempts.insert().values(
        delivery_id=sa.bindparam("delivery_id"),
        number=sa.bindparam("number"),
        at=sa.bindparam("at"),
        state=DeliveryAttemptState.SENDING,
    )


@functools.cache
def _interrupt_statement() -> sa.Update:
    """The attempts of ``ids`` still ``sending``: their sender died, they are interrupted."""
    return (
        delivery_attempts.update()
        .where(
            delivery_attempts.c.delivery_id.in_(sa.bindparam("ids", expanding=True)),
            delivery_attempts.c.state == DeliveryAttemptState.SENDING,
        )
        .values(state=DeliveryAttemptState.INTERRUPTED, error=INTERRUPTED)
    )


@functools.cache
def _done_attempt_statement(dialect: str) -> sa.Update:
    """Complete one attempt row (executed for many): ``a_id``'s attempt ``a_number``."""
    return (
        delivery_attempts.update()
        .where(
            delivery_attempts.c.delivery_id == sa.bindparam("a_id"),
            delivery_attempts.c.number == sa.bindparam("a_number"),
        )
        .values(
            state=DeliveryAttemptState.DONE,
            status_code=sa.bindparam("a_code", type_=sa.Integer),
            error=sa.bindparam("a_error", type_=sa.Text),
            duration_ms=sa.bindparam("a_ms", type_=sa.Float),
        )
    )


def _held_statement(dialect: str, owned: bool) -> sa.Select[Any]:
    """Of ``ids``, the deliveries still ``sending`` under ``owner``'s lease (no owner's, when
    not ``owned``), locked on PostgreSQL, with what recording an attempt needs: the service's
    name, the current attempt's start and the endpoint breaker's ``failing_since``."""
    holder = (
        deliveries.c.lease_owner == sa.bindparam("owner")
        if owned
        else deliveries.c.lease_owner.is_(None)
    )
    return (
        sa.select(
            deliveries.c.id,
            deliveries.c.kind,
            deliveries.c.job_id,
            deliveries.c.service_id,
            deliveries.c.endpoint,
            deliveries.c.url,
            deliveries.c.attempts,
            services.c.name.label("service"),
            delivery_attempts.c.at.label("started_at"),
            endpoints.c.failing_since,
        )
        .select_from(
            deliveries.outerjoin(services, services.c.id == deliveries.c.service_id)
            .outerjoin(
                delivery_attempts,
                sa.and_(
                    delivery_attempts.c.delivery_id == deliveries.c.id,
                    delivery_attempts.c.number == deliveries.c.attempts,
                ),
            )
            .outerjoin(
                endpoints,
                sa.and_(
                    endpoints.c.service_id == deliveries.c.service_id,
                    endpoints.c.endpoint == deliveries.c.endpoint,
                ),
            )
        )
        .where(
            _in_ids(deliveries.c.id, dialect),
            deliveries.c.status == _literal(DeliveryStatus.SENDING),
            holder,
        )
        .with_for_update(of=deliveries)
    )


@functools.cache
def _held_by_owner(dialect: str) -> sa.Select[Any]:
    return _held_statement(dialect, owned=True)


@functools.cache
def _held_by_nobody(dialect: str) -> sa.Select[Any]:
    return _held_statement(dialect, owned=False)


@functools.cache
def _move_statement(dialect: str) -> sa.Update:
    """Move one held delivery on after its attempt (executed for many)."""
    return (
        deliveries.update()
        .where(deliveries.c.id == sa.bindparam("m_id"))
        .values(
            status=sa.bindparam("m_status", type_=sa.String),
            next_attempt_at=sa.bindparam("m_next", type_=Time),
            lease_expires=None,
            lease_owner=None,
            delivered_at=sa.bindparam("m_at", type_=Time),
            last_status_code=sa.bindparam("m_code", type_=sa.Integer),
            last_error=sa.bindparam("m_error", type_=sa.Text),
        )
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
            return self._lease_due(conn, limit, lease_seconds, owner, now)

    def record_and_claim(
        self,
        results: Sequence[DeliveryResult],
        limit: int,
        lease_seconds: float,
        owner: str = "",
    ) -> tuple[list[bool], list[Delivery]]:
        """Record ``results`` (as :meth:`record_deliveries`), then lease up to ``limit`` due
        deliveries (as :meth:`claim_deliveries`), in one transaction: one commit for an outbox's
        whole turn. The claim sees the room the recorded attempts left under the caps."""
        now = self.clock.now()
        with self._write() as conn:
            moved = self._record(conn, results, owner, now) if results else []
            claimed = self._lease_due(conn, limit, lease_seconds, owner, now) if limit > 0 else []
        return moved, claimed

    def _lease_due(
        self, conn: sa.Connection, limit: int, lease_seconds: float, owner: str, now: float
    ) -> list[Delivery]:
        """The claim, in ``conn``'s write transaction: pick, lease, end the abandoned attempts
        of stale ones as ``interrupted``, read what sending needs, log each new attempt."""
        if conn.dialect.name == "postgresql":
            conn.execute(_CLAIM_LOCK)
        picked = self._pick(conn, limit, now)
        if not picked:
            return []
        ids = {
            row["id"]
            for row in _run(
                conn,
                _lease_statement,
                {
                    "ids": _ids(conn, [r["id"] for r in picked]),
                    "now": now,
                    "until": now + lease_seconds,
                    "owner": owner or None,
                },
            )
        }
        if not ids:
            return []
        stale = [r["id"] for r in picked if r["stale"] and r["id"] in ids]
        if stale:  # their senders died mid-attempt: those attempts stay in the log, interrupted
            conn.execute(_interrupt_statement(), {"ids": stale})
        rows = []  # in the claim's fair order, each with its attempt's number
        for r in picked:
            if r["id"] in ids:
                r["attempts"] += 1
                rows.append(Delivery.from_row(r, now=now))
        _run_many(
            conn,
            _attempt_statement,
            [{"delivery_id": r.id, "number": r.attempt, "at": now} for r in rows],
        )
        return rows

    def _pick(self, conn: sa.Connection, limit: int, now: float) -> list[dict[str, Any]]:
        """What a claim takes, in its order, each row with what sending it needs and whether
        it was abandoned mid-attempt (``stale``: ``sending`` under a lease that ran out):
        claimable, within both in-flight caps, services in turns.

        Per endpoint, its claimable deliveries in due order are numbered 1, 2, ...; those whose
        number plus the endpoint's attempts in flight is over ``delivery_per_endpoint`` stay.
        The rest are numbered per service, and the same rule with ``delivery_per_service``
        applies. The survivors are taken by that number first (each service's first, then
        each one's second, ...), then by due time. An operator event (no service) counts as
        its own service.
        """
        return _run(
            conn,
            _pick_statement,
            {
                "now": now,
                "limit": limit,
                "per_endpoint": self.delivery_per_endpoint,
                "per_service": self.delivery_per_service,
            },
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
                    deliveries.c.status == _literal(DeliveryStatus.PENDING),
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
        result = DeliveryResult(
            delivery_id, number, outcome, status_code, error, duration_ms, next_attempt_at
        )
        [moved] = self.record_deliveries([result], owner)
        return moved

    def record_deliveries(self, results: Sequence[DeliveryResult], owner: str = "") -> list[bool]:
        """:meth:`record_delivery` for many attempts in one transaction (one commit), applied in
        order; whether each delivery moved on."""
        if not results:
            return []
        now = self.clock.now()
        with self._write() as conn:
            return self._record(conn, results, owner, now)

    def _record(
        self, conn: sa.Connection, results: Sequence[DeliveryResult], owner: str, now: float
    ) -> list[bool]:
        """Record ``results`` in ``conn``'s write transaction, in order.

        Every attempt row is completed; the deliveries ``owner`` still holds (read, and locked
        on PostgreSQL, with what the breaker and the exhausted event need) for the attempt
        recorded (their latest) move on; then each
        callback that moved feeds its endpoint's breaker and may report itself exhausted. A
        success at an endpoint that is not failing writes nothing to the breaker.
        """
        _run_many(
            conn,
            _done_attempt_statement,
            [
                {
                    "a_id": r.delivery_id,
                    "a_number": r.number,
                    "a_code": r.status_code,
                    "a_error": r.error,
                    "a_ms": r.duration_ms,
                }
                for r in results
            ],
        )
        held = {
            row["id"]: row
            for row in _run(
                conn,
                _held_by_owner if owner else _held_by_nobody,
                {"ids": _ids(conn, [r.delivery_id for r in results]), "owner": owner},
            )
        }
        # only the attempt the lease is for moves it on: the late answer of an attempt this
        # outbox itself took over (its lease had run out) leaves the newer attempt in flight
        moving = [
            r
            for r in results
            if r.delivery_id in held and int(held[r.delivery_id]["attempts"]) == r.number
        ]
        if moving:
            _run_many(
                conn,
                _move_statement,
                [
                    {
                        "m_id": r.delivery_id,
                        "m_status": str(r.status),
                        "m_next": r.next_attempt_at if r.status is DeliveryStatus.PENDING else None,
                        "m_at": now if r.status is DeliveryStatus.DELIVERED else None,
                        "m_code": r.status_code,
                        "m_error": r.error,
                    }
                    for r in moving
                ],
            )
        failing: dict[tuple[str, str], bool] = {}  # what this batch left each endpoint at
        for r in moving:
            row = held[r.delivery_id]
            if row["kind"] == ALERT or row["service_id"] is None:
                continue  # an operator event's delivery: no breaker, no event about itself
            self._after_attempt(conn, r, row, failing, now)
        moved = {r.delivery_id for r in moving}
        return [r.delivery_id in moved for r in results]

    def _after_attempt(
        self,
        conn: sa.Connection,
        result: DeliveryResult,
        row: Any,
        failing: dict[tuple[str, str], bool],
        now: float,
    ) -> None:
        """A callback's attempt has moved it on: feed the breaker; report an exhausted one.

        ``failing`` holds what the batch's earlier attempts left each endpoint at (failing or
        not); an endpoint not in it is failing when its row says so.
        """
        endpoint = row["endpoint"] or endpoint_of(row["url"])
        key = (row["service_id"], endpoint)
        ok = result.outcome is DeliveryOutcome.DELIVERED
        if ok:
            known = failing.get(key)
            was_failing = (
                known
                if known is not None
                else (row["endpoint"] is None or row["failing_since"] is not None)
            )
            if was_failing:
                self._feed_breaker(conn, row, endpoint, True, now, now)
            failing[key] = False
        else:
            if result.number == row["attempts"] and row["started_at"] is not None:
                started = float(row["started_at"])
            else:
                started = self._attempt_start(conn, result.delivery_id, result.number, now)
            self._feed_breaker(conn, row, endpoint, False, started, now)
            failing[key] = True
        if result.status is DeliveryStatus.FAILED and result.outcome is DeliveryOutcome.RETRY:
            record_event(
                conn,
                event=OperatorEvent.DELIVERY_EXHAUSTED,
                service=row["service"],
                details={
                    "delivery_id": result.delivery_id,
                    "job_id": row["job_id"],
                    "endpoint": endpoint,
                    "attempts": int(row["attempts"]),
                    "last_status_code": result.status_code,
                    "last_error": result.error,
                },
                now=now,
                alert_url=self.alert_url,
            )

    @staticmethod
    def _attempt_start(conn: sa.Connection, delivery_id: str, number: int, now: float) -> float:
        """When attempt ``number`` of ``delivery_id`` started (``now`` if it is not logged)."""
        at = conn.execute(
            sa.select(delivery_attempts.c.at).where(
                delivery_attempts.c.delivery_id == delivery_id,
                delivery_attempts.c.number == number,
            )
        ).scalar()
        return float(at) if at is not None else now

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
