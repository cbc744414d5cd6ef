"""batches: retention purges them, and tombstones of purged batches

A purge pass removes a batch whose jobs are all purged once it ended longer ago than its
service's retention: it finds a service's ended batches oldest first on
``ix_batches_service_ended`` (service_id, ended_at, partial on ended_at IS NOT NULL: open
batches are not in it). ``purged_batches`` keeps one compact row per purged batch, so that
``GET /v1/batches/{id}`` answers 410 Gone instead of 404, for a year.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_index(
        "ix_batches_service_ended",
        "batches",
        ["service_id", "ended_at"],
        sqlite_where=sa.text("ended_at IS NOT NULL"),
        postgresql_where=sa.text("ended_at IS NOT NULL"),
    )
    op.create_table(
        "purged_batches",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("ended_at", Time, nullable=True),
        sa.Column("purged_at", Time, nullable=False),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_index("ix_purged_batches_purged_at", "purged_batches", ["purged_at"])


def downgrade() -> None:
    op.drop_index("ix_purged_batches_purged_at", table_name="purged_batches")
    op.drop_table("purged_batches")
    op.drop_index("ix_batches_service_ended", table_name="batches")
