"""Many jobs at once, straight into a store's ``jobs`` table, for the listing's tests and bench.

``add_jobs`` writes ``count`` rows for one service in one transaction: executemany on SQLite,
``COPY`` on PostgreSQL (100,000 rows take about a second on either). The rows are as a trigger
makes them, with statuses and workflows cycled, one every ``spacing`` seconds from ``start``;
ids sort in creation order (``job_b`` + a zero-padded number), so tests can predict the order.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from genhook.store.schema import jobs

STATUSES = ("succeeded", "failed", "cancelled", "queued")
WORKFLOWS = ("product-image", "banner", "social-card")
COLUMNS = (
    "id",
    "service_id",
    "workflow_id",
    "workflow_version",
    "status",
    "input",
    "external_id",
    "created_at",
    "updated_at",
    "run_after",
)


def job_rows(
    service_id: str,
    count: int,
    *,
    start: float = 1_700_000_000.0,
    spacing: float = 0.01,
    first: int = 0,
    statuses: Sequence[str] = STATUSES,
    workflows: Sequence[str] = WORKFLOWS,
) -> list[dict[str, Any]]:
    """``count`` job rows of ``service_id``, numbered from ``first``."""
    rows = []
    for n in range(first, first + count):
        at = start + n * spacing
        rows.append(
            {
                "id": f"job_b{n:012d}",
                "service_id": service_id,
                "workflow_id": workflows[n % len(workflows)],
                "workflow_version": 1,
                "status": statuses[n % len(statuses)],
                "input": {"n": n},
                "external_id": f"SKU-{n % 1000}",
                "created_at": at,
                "updated_at": at,
                "run_after": at,
            }
        )
    return rows


def add_jobs(engine: sa.Engine, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (as :func:`job_rows` makes them) in one transaction, then ANALYZE."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            text = io.StringIO()
            for r in rows:
                values = [str(r[c]) if c != "input" else json.dumps(r[c]) for c in COLUMNS]
                text.write("\t".join(values) + "\n")
            raw = conn.connection.dbapi_connection
            assert raw is not None
            statement = f"COPY jobs ({', '.join(COLUMNS)}) FROM STDIN"
            with raw.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[attr-defined]
                copy.write(text.getvalue())
        else:
            conn.execute(jobs.insert(), list(rows))
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
