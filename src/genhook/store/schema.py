"""The tables, as SQLAlchemy Core metadata. Times are epoch seconds (float), from the clock.

Alembic migrations in ``migrations/versions`` create exactly these; a test compares them.
"""

from __future__ import annotations

import sqlalchemy as sa

from genhook.status import DeliveryStatus, JobStatus

metadata = sa.MetaData()
Time = sa.Float(precision=53)

services = sa.Table(
    "services",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("api_key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("api_key_prefix", sa.String(16), nullable=False),
    sa.Column("webhook_secret", sa.String(100), nullable=False),
    sa.Column("rate_limit", sa.String(40), nullable=True),
    sa.Column("daily_budget", sa.Float, nullable=True),
    sa.Column("paused_at", Time, nullable=True),
    sa.Column("created_at", Time, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), nullable=False),
    sa.Column("workflow_id", sa.String(64), nullable=False),
    sa.Column("workflow_version", sa.Integer, nullable=False),
    # queued | running | retrying | succeeded | failed | cancelled
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("callback_url", sa.Text, nullable=True),
    # the trigger envelope but callback_url: callback_events, client_metadata, priority, deadline
    sa.Column("envelope", sa.JSON, nullable=True),
    # the SSRF decision taken when the trigger was accepted: private callbacks were allowed
    sa.Column("callback_private", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("run_after", Time, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(80), nullable=True),
    sa.Column("lease_expires", Time, nullable=True),
    sa.Column("first_claimed_at", Time, nullable=True),
    sa.Column("finished_at", Time, nullable=True),
    sa.Column("processing_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("credit_cost", sa.Float, nullable=False, server_default="0"),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
)
# The claim query reads only these rows: a partial index keeps it fast at any table size.
sa.Index(
    "ix_jobs_claimable",
    jobs.c.run_after,
    sqlite_where=jobs.c.status.in_([JobStatus.QUEUED, JobStatus.RETRYING]),
    postgresql_where=jobs.c.status.in_([JobStatus.QUEUED, JobStatus.RETRYING]),
)
sa.Index(
    "ix_jobs_leased",
    jobs.c.lease_expires,
    sqlite_where=jobs.c.status == JobStatus.RUNNING,
    postgresql_where=jobs.c.status == JobStatus.RUNNING,
)
sa.Index("ix_jobs_service_external", jobs.c.service_id, jobs.c.external_id)
sa.Index(
    "ux_jobs_idempotency",
    jobs.c.service_id,
    jobs.c.idempotency_key,
    unique=True,
    sqlite_where=jobs.c.idempotency_key.is_not(None),
    postgresql_where=jobs.c.idempotency_key.is_not(None),
)

attempts = sa.Table(
    "job_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(80), nullable=False),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("ended_at", Time, nullable=True),
    # succeeded | failed | retrying | cancelled | lost
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("error_code", sa.String(64), nullable=True),
    sa.Column("error_description", sa.Text, nullable=True),
)

events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.JSON, nullable=True),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the webhook-id
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    # pending | sending | delivered | failed
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Time, nullable=True),
    sa.Column("lease_expires", Time, nullable=True),
    sa.Column("lease_owner", sa.String(120), nullable=True),  # the sending outbox: host:pid:token
    sa.Column("created_at", Time, nullable=False),
    sa.Column("delivered_at", Time, nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
)
sa.Index(
    "ix_deliveries_due",
    deliveries.c.next_attempt_at,
    sqlite_where=deliveries.c.status == DeliveryStatus.PENDING,
    postgresql_where=deliveries.c.status == DeliveryStatus.PENDING,
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id", sa.String(40), sa.ForeignKey("deliveries.id"), nullable=False, index=True
    ),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("at", Time, nullable=False),
    # sending (recorded before the request) | done | interrupted (the sender died mid-attempt)
    sa.Column("state", sa.String(16), nullable=False, server_default="done"),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=True),  # None until the attempt is done
    sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),
)

# /healthz proves the database can write by inserting a row here in a transaction that it rolls
# back: the table stays empty
store_probe = sa.Table(
    "store_probe",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
