"""deliveries: the pending ones by service and endpoint, so a claim seeks a few per endpoint

A claim takes, of every (service, endpoint) with due deliveries, only the first few in due order
(no later one fits under the endpoint's in-flight cap); this partial index lets it find each
pair, and those few, with a seek instead of ranking the whole backlog. Pending and sending
deliveries written before 0005 had no endpoint: it is filled in, since a claim finds pending
deliveries through it.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from genhook.store.ops_events import endpoint_of

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    unset = conn.execute(
        sa.text(
            "SELECT id, url FROM deliveries"
            " WHERE endpoint IS NULL AND status IN ('pending', 'sending')"
        )
    ).all()
    if unset:
        conn.execute(
            sa.text("UPDATE deliveries SET endpoint = :endpoint WHERE id = :id"),
            [{"id": row.id, "endpoint": endpoint_of(row.url)} for row in unset],
        )
    op.create_index(
        "ix_deliveries_pending_pair",
        "deliveries",
        ["service_id", "endpoint", "next_attempt_at", "id"],
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_pair", table_name="deliveries")
