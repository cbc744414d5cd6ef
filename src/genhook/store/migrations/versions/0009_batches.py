"""batches: many triggers in one request, and the batch callback

``batches`` keeps one row per accepted batch: its items' answers as given (``items``: per index
a job id or that item's error), how many jobs it created and how many of them have not ended yet
(``open``: decremented in the transaction that ends each of them, so the last one's transaction
outboxes the batch callback exactly once), and the batch's own callback URL. ``jobs.batch_id``
names the batch that created a job (``ix_jobs_batch``, partial: most jobs have none);
``deliveries.batch_id`` names the batch whose callback a delivery carries (job_id is NULL then).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("open", sa.Integer(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("callback_private", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("ended_at", Time, nullable=True),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_batches_service_created", "batches", ["service_id", "created_at"])
    op.add_column("jobs", sa.Column("batch_id", sa.String(length=40), nullable=True))
    op.create_index(
        "ix_jobs_batch",
        "jobs",
        ["batch_id"],
        sqlite_where=sa.text("batch_id IS NOT NULL"),
        postgresql_where=sa.text("batch_id IS NOT NULL"),
    )
    op.add_column("deliveries", sa.Column("batch_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("batch_id")
    op.drop_index("ix_jobs_batch", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("batch_id")
    op.drop_index("ix_batches_service_created", table_name="batches")
    op.drop_table("batches")
