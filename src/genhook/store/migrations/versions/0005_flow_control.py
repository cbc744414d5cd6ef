"""flow control and cost: holds, priority, dedup, budgets, breakers, operator events, roll-ups

jobs gain why they wait (hold_reason; run_after is their eligible_at), priority, a dedup key,
their backend, a credit estimate and reservation, a rate slot and spared attempts; attempts
record what they made and cost. deliveries carry operator events too (kind alert, no job).
New tables: the daily credit ledger, backend breakers, callback endpoints, the operator event
log, and the hourly roll-ups behind /v1/ops/summary.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)
CLAIMABLE = "status IN ('queued', 'retrying')"


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("queue_limit", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("on_budget", sa.String(length=8), nullable=False, server_default="hold")
        )
        batch.add_column(
            sa.Column("sandbox", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("paused_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_secret", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("previous_secret_until", Time, nullable=True))
        batch.add_column(sa.Column("key_rotated_at", Time, nullable=True))
        batch.add_column(sa.Column("storm_bucket", Time, nullable=True))
        batch.add_column(sa.Column("storm_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("storm_previous", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("last_served_at", Time, nullable=False, server_default="0"))
        batch.add_column(sa.Column("waiting", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("rate_seq", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("start_seq", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("hold_reason", sa.String(length=24), nullable=True))
        batch.add_column(
            sa.Column("priority", sa.SmallInteger(), nullable=False, server_default="1")
        )
        batch.add_column(sa.Column("dedup_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("backend", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("estimate", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reserved", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reserved_day", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("rate_slot", Time, nullable=True))
        batch.add_column(sa.Column("rate_seq", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("start_seq", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("sandbox", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("spared_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE services SET waiting = (SELECT count(*) FROM jobs WHERE jobs.service_id = "
        "services.id AND jobs.status IN ('queued', 'retrying'))"
    )
    op.create_index(
        "ix_jobs_service_claimable",
        "jobs",
        ["service_id", sa.text("priority DESC"), "run_after", "id"],
        sqlite_where=sa.text(CLAIMABLE),
        postgresql_where=sa.text(CLAIMABLE),
    )
    op.create_index(
        "ix_jobs_service_slot",
        "jobs",
        ["service_id", "rate_seq"],
        sqlite_where=sa.text("rate_seq IS NOT NULL"),
        postgresql_where=sa.text("rate_seq IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_service_started",
        "jobs",
        ["service_id", "start_seq"],
        sqlite_where=sa.text("start_seq IS NOT NULL"),
        postgresql_where=sa.text("start_seq IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_dedup",
        "jobs",
        ["service_id", "dedup_key", "created_at"],
        sqlite_where=sa.text("dedup_key IS NOT NULL"),
        postgresql_where=sa.text("dedup_key IS NOT NULL"),
    )
    with op.batch_alter_table("job_attempts") as batch:
        batch.add_column(sa.Column("backend", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("made", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("credit_cost", sa.Float(), nullable=False, server_default="0"))
    op.create_index("ix_job_attempts_backend_started", "job_attempts", ["backend", "started_at"])
    with op.batch_alter_table("deliveries") as batch:
        batch.alter_column("job_id", existing_type=sa.String(length=40), nullable=True)
        batch.alter_column("service_id", existing_type=sa.String(length=40), nullable=True)
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="callback")
        )
        batch.add_column(sa.Column("endpoint", sa.String(length=300), nullable=True))
    op.create_table(
        "credit_ledger",
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("spent", sa.Float(), nullable=False, server_default="0"),
        sa.Column("reserved", sa.Float(), nullable=False, server_default="0"),
        sa.Column("alerted_80", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("alerted_100", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.PrimaryKeyConstraint("service_id", "day"),
    )
    op.create_table(
        "backend_state",
        sa.Column("backend", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False, server_default="closed"),
        sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("opened_at", Time, nullable=True),
        sa.Column("probe_at", Time, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("backend"),
    )
    op.create_table(
        "endpoints",
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=300), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False, server_default="enabled"),
        sa.Column("failing_since", Time, nullable=True),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("disabled_at", Time, nullable=True),
        sa.Column("updated_at", Time, nullable=False),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.PrimaryKeyConstraint("service_id", "endpoint"),
    )
    op.create_table(
        "operator_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("service", sa.String(length=100), nullable=True),
        sa.Column("at", Time, nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_operator_events_at", "operator_events", ["at"])
    op.create_table(
        "job_rollups",
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("workflow_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", Time, nullable=False),
        *(
            sa.Column(name, sa.Integer(), nullable=False, server_default="0")
            for name in ("triggers", "refused", "completed", "failed", "cancelled", "retries")
        ),
        sa.Column("generation_seconds", sa.Float(), nullable=False, server_default="0"),
        sa.Column("qc_checked", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("qc_passed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("credits", sa.Float(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.PrimaryKeyConstraint("service_id", "workflow_id", "bucket"),
    )
    op.create_index("ix_job_rollups_bucket", "job_rollups", ["bucket"])
    op.create_index(
        "ix_deliveries_failed",
        "deliveries",
        ["created_at"],
        sqlite_where=sa.text("status = 'failed'"),
        postgresql_where=sa.text("status = 'failed'"),
    )
    op.create_index(
        "ix_deliveries_sending",
        "deliveries",
        ["lease_expires"],
        sqlite_where=sa.text("status = 'sending'"),
        postgresql_where=sa.text("status = 'sending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_sending", table_name="deliveries")
    op.drop_index("ix_deliveries_failed", table_name="deliveries")
    op.drop_index("ix_job_rollups_bucket", table_name="job_rollups")
    op.drop_table("job_rollups")
    op.drop_index("ix_operator_events_at", table_name="operator_events")
    op.drop_table("operator_events")
    op.drop_table("endpoints")
    op.drop_table("backend_state")
    op.drop_table("credit_ledger")
    op.execute(
        "DELETE FROM delivery_attempts WHERE delivery_id IN "
        "(SELECT id FROM deliveries WHERE job_id IS NULL)"
    )
    op.execute("DELETE FROM deliveries WHERE job_id IS NULL")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("endpoint")
        batch.drop_column("kind")
        batch.alter_column("service_id", existing_type=sa.String(length=40), nullable=False)
        batch.alter_column("job_id", existing_type=sa.String(length=40), nullable=False)
    op.drop_index("ix_job_attempts_backend_started", table_name="job_attempts")
    with op.batch_alter_table("job_attempts") as batch:
        for name in ("credit_cost", "made", "backend"):
            batch.drop_column(name)
    for index in (
        "ix_jobs_dedup",
        "ix_jobs_service_started",
        "ix_jobs_service_slot",
        "ix_jobs_service_claimable",
    ):
        op.drop_index(index, table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for name in (
            "sandbox",
            "spared_attempts",
            "start_seq",
            "rate_seq",
            "rate_slot",
            "reserved_day",
            "reserved",
            "estimate",
            "backend",
            "dedup_key",
            "priority",
            "hold_reason",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("services") as batch:
        for name in (
            "start_seq",
            "rate_seq",
            "waiting",
            "last_served_at",
            "storm_previous",
            "storm_count",
            "storm_bucket",
            "key_rotated_at",
            "previous_secret_until",
            "previous_secret",
            "paused_reason",
            "sandbox",
            "on_budget",
            "queue_limit",
        ):
            batch.drop_column(name)
