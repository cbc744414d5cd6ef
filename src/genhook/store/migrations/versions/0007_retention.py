"""retention: per-service retention, the purge's index, and tombstones of purged jobs

services gain ``retention`` (a duration such as ``30d``; NULL: GENHOOK_RETENTION). The purge
finds a service's ended jobs oldest first on ``ix_jobs_service_finished`` (service_id,
finished_at, partial on finished_at IS NOT NULL: jobs still waiting or running are not in it).
``purged_jobs`` keeps one compact row per purged job, so that its URLs answer 410 Gone instead
of 404, and so that its assets are deleted even if the process that purged its rows died before
deleting them (``assets_deleted_at`` NULL: still to do).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("retention", sa.String(length=40), nullable=True))
    op.create_index(
        "ix_jobs_service_finished",
        "jobs",
        ["service_id", "finished_at"],
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )
    op.create_table(
        "purged_jobs",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("finished_at", Time, nullable=True),
        sa.Column("purged_at", Time, nullable=False),
        sa.Column("assets_deleted_at", Time, nullable=True),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_purged_jobs_purged_at", "purged_jobs", ["purged_at"])
    op.create_index(
        "ix_purged_jobs_assets_pending",
        "purged_jobs",
        ["purged_at"],
        sqlite_where=sa.text("assets_deleted_at IS NULL"),
        postgresql_where=sa.text("assets_deleted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_purged_jobs_assets_pending", table_name="purged_jobs")
    op.drop_index("ix_purged_jobs_purged_at", table_name="purged_jobs")
    op.drop_table("purged_jobs")
    op.drop_index("ix_jobs_service_finished", table_name="jobs")
    with op.batch_alter_table("services") as batch:
        batch.drop_column("retention")
