"""What flow control writes inside the job store's transactions: roll-ups, the credit ledger,
budget thresholds and breaker state. Functions of a connection, so that each change commits
with the job transition that causes it (or not at all)."""

from __future__ import annotations

import functools
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from genhook.flow import Breaker, BreakerState, thresholds_crossed, utc_day
from genhook.store.ops_events import OperatorEvent, record_event
from genhook.store.schema import backend_state, credit_ledger, job_rollups, services


@functools.lru_cache(maxsize=64)
def _upsert_statement(
    dialect: str, table: sa.Table, keys: tuple[str, ...], add: tuple[str, ...]
) -> Any:
    """The insert-or-add statement for these columns, built once (building one per call costs
    more than running it)."""
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table).values({k: sa.bindparam(k) for k in (*keys, *add)})
    return stmt.on_conflict_do_update(
        index_elements=list(keys), set_={k: table.c[k] + stmt.excluded[k] for k in add}
    )


def _upsert(conn: sa.Connection, table: sa.Table, keys: dict[str, Any], **add: float) -> None:
    """Insert the row of ``keys`` with ``add`` as its values, or add ``add`` to an existing one."""
    stmt = _upsert_statement(conn.dialect.name, table, tuple(keys), tuple(sorted(add)))
    conn.execute(stmt, {**keys, **add})


def hour_of(now: float) -> float:
    return math.floor(now / 3600.0) * 3600.0


def bump_rollup(
    conn: sa.Connection, service_id: str, workflow_id: str, now: float, **add: float
) -> None:
    """Add to the hour's roll-up of one service and workflow (triggers, completed, ...)."""
    keys = {"service_id": service_id, "workflow_id": workflow_id, "bucket": hour_of(now)}
    _upsert(conn, job_rollups, keys, **add)


# the first key of the two-key advisory locks that stand for a row that may not exist yet (the
# two-key space does not overlap the one-key locks, such as the delivery claims'); "ghk" + kind
LEDGER_LOCK = 0x67686B4C  # a service's ledger day
BREAKER_LOCK = 0x67686B42  # a backend's breaker


def lock_key(conn: sa.Connection, space: int, key: str) -> None:
    """On PostgreSQL, hold the transaction-scoped advisory lock ``(space, hashtext(key))``
    until the transaction ends; nothing on SQLite, whose ``BEGIN IMMEDIATE`` serialises every
    writer already. ``SELECT ... FOR UPDATE`` locks only rows that exist: two transactions that
    both find no row would both go on, so a row that may be missing is locked by name."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.select(sa.func.pg_advisory_xact_lock(space, sa.func.hashtext(key)))
        ).scalar()


def ledger(conn: sa.Connection, service_id: str, day: str) -> sa.Row[Any] | None:
    """A service's ledger row for ``day``, locked on PostgreSQL until the transaction ends
    (the day's advisory lock first, so that the day's first reservations, which find no row
    to lock, take turns too)."""
    lock_key(conn, LEDGER_LOCK, f"{service_id}/{day}")
    return conn.execute(
        sa.select(credit_ledger)
        .where(credit_ledger.c.service_id == service_id, credit_ledger.c.day == day)
        .with_for_update()
    ).first()


def add_to_ledger(
    conn: sa.Connection, service_id: str, day: str, *, spent: float = 0.0, reserved: float = 0.0
) -> None:
    """Add to a service's ledger day. The day's advisory lock comes first, as in
    :func:`ledger`, so that every transaction takes the lock before the row (no deadlock
    between a claim's reservation and a finish's settlement)."""
    lock_key(conn, LEDGER_LOCK, f"{service_id}/{day}")
    keys = {"service_id": service_id, "day": day}
    _upsert(conn, credit_ledger, keys, spent=spent, reserved=reserved)


def check_thresholds(
    conn: sa.Connection,
    service_id: str,
    day: str,
    now: float,
    alert_url: str | None,
    *,
    exhausted: bool = False,
) -> None:
    """Send each budget threshold's operator event once a day: 80% and 100% of the daily
    budget spent (or, with ``exhausted``, a job the budget could not cover: 100% reached)."""
    svc = conn.execute(
        sa.select(services.c.name, services.c.daily_budget).where(services.c.id == service_id)
    ).first()
    if svc is None or not svc.daily_budget:
        return
    row = ledger(conn, service_id, day)
    spent = row.spent if row else 0.0
    used = svc.daily_budget if exhausted else spent
    crossed = thresholds_crossed(
        svc.daily_budget, used, bool(row and row.alerted_80), bool(row and row.alerted_100)
    )
    if not crossed:
        return
    if row is None:
        add_to_ledger(conn, service_id, day)
    flags = {f"alerted_{int(t * 100)}": True for t in crossed}
    conn.execute(
        credit_ledger.update()
        .where(credit_ledger.c.service_id == service_id, credit_ledger.c.day == day)
        .values(**flags)
    )
    for threshold in crossed:
        record_event(
            conn,
            event=OperatorEvent.BUDGET_THRESHOLD,
            service=svc.name,
            details={
                "threshold": threshold,
                "daily_budget": svc.daily_budget,
                "credits_today": round(spent, 6),
                "day": day,
            },
            now=now,
            alert_url=alert_url,
        )


def settle(
    conn: sa.Connection,
    service_id: str,
    reserved: float,
    reserved_day: str | None,
    spent: float,
    now: float,
    alert_url: str | None,
) -> None:
    """An attempt ended: release its reservation and book what it really cost today."""
    day = utc_day(now)
    if reserved and reserved_day:
        add_to_ledger(conn, service_id, reserved_day, reserved=-reserved)
    if spent:
        add_to_ledger(conn, service_id, day, spent=spent)
        check_thresholds(conn, service_id, day, now, alert_url)


_BREAKER = sa.select(backend_state).where(backend_state.c.backend == sa.bindparam("backend"))


def breaker(conn: sa.Connection, backend: str, *, lock: bool = True) -> Breaker:
    """A backend's breaker (closed when it has no row), read to change it: held until the
    transaction ends (PostgreSQL: the backend's advisory lock, since the row may not exist
    yet), so that failures counted by two processes at once are both counted and the breaker
    opens once. ``lock=False``: a read that changes nothing (admission)."""
    if lock:
        lock_key(conn, BREAKER_LOCK, backend)
    row = conn.execute(_BREAKER, {"backend": backend}).first()
    if row is None:
        return Breaker()
    return Breaker(BreakerState(row.state), row.failures, row.opened_at, row.probe_at)


def save_breaker(
    conn: sa.Connection, backend: str, state: Breaker, now: float, error: str | None = None
) -> None:
    values = {
        "state": str(state.state),
        "failures": state.failures,
        "opened_at": state.opened_at,
        "probe_at": state.probe_at,
        "last_error": error,
        "updated_at": now,
    }
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(backend_state).values(backend=backend, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["backend"], set_=values))
