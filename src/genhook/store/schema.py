"""The tables, as SQLAlchemy Core metadata. Times are epoch seconds (float), from the clock.

Alembic migrations in ``migrations/versions`` create exactly these; a test compares them.
"""

from __future__ import annotations

import sqlalchemy as sa

from genhook.status import CLAIMABLE_ORDER, DeliveryStatus, JobStatus

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
    # flow control (issue 7): waiting jobs past which triggers get 429 (None: the default)
    sa.Column("queue_limit", sa.Integer, nullable=True),
    # hold | fail: what a job that the daily budget cannot cover does
    sa.Column("on_budget", sa.String(8), nullable=False, server_default="hold"),
    # a sandbox service: procedural backend, 0 credits, "test": true in every payload
    sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("paused_reason", sa.Text, nullable=True),
    # the secret before the last rotation, still signing (beside the new one) until then
    sa.Column("previous_secret", sa.String(100), nullable=True),
    sa.Column("previous_secret_until", Time, nullable=True),
    # bumped when the key is rotated: API processes drop their cached look-ups
    sa.Column("key_rotated_at", Time, nullable=True),
    # the storm breaker's two hour buckets: triggers counted in this hour and in the one before
    sa.Column("storm_bucket", Time, nullable=True),
    sa.Column("storm_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("storm_previous", sa.Integer, nullable=False, server_default="0"),
    # the fair claim serves the service that was served longest ago
    sa.Column("last_served_at", Time, nullable=False, server_default="0"),
    # its jobs waiting (queued or retrying, held or not): the queue limit's count, kept in the
    # transactions that move a job in or out of the queue, so that no accept counts rows
    sa.Column("waiting", sa.Integer, nullable=False, server_default="0"),
    # the last rate_seq and start_seq given to one of its jobs
    sa.Column("rate_seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("start_seq", sa.Integer, nullable=False, server_default="0"),
    # how long its ended jobs, payloads and assets are kept, e.g. "30d" (None: GENHOOK_RETENTION)
    sa.Column("retention", sa.String(40), nullable=True),
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
    # flow control (issue 7). While queued: why the job waits (None, rate_limit, budget, paused,
    # backend_unavailable); run_after is then its eligible_at
    sa.Column("hold_reason", sa.String(24), nullable=True),
    # 0 low, 1 normal, 2 high: order within the service's own share
    sa.Column("priority", sa.SmallInteger, nullable=False, server_default="1"),
    # the template's deduplication key over input fields (sha256), None when it declares none
    sa.Column("dedup_key", sa.String(64), nullable=True),
    # the backend its generate nodes resolve to, for per-backend limits and breakers
    sa.Column("backend", sa.String(40), nullable=True),
    # the credit estimate (the dry-run's prices), reserved against the budget at each start
    sa.Column("estimate", sa.Float, nullable=False, server_default="0"),
    # what the running attempt holds reserved, and on which UTC day's ledger
    sa.Column("reserved", sa.Float, nullable=False, server_default="0"),
    sa.Column("reserved_day", sa.String(10), nullable=True),
    # its place in the service's rate window: the start slot given when it was accepted
    sa.Column("rate_slot", Time, nullable=True),
    # a rate-limited service's jobs numbered in order of acceptance and of first start: the
    # window's N-th latest slot (or start) is then one index read, whatever N
    sa.Column("rate_seq", sa.Integer, nullable=True),
    sa.Column("start_seq", sa.Integer, nullable=True),
    # attempts that do not count against the retry schedule (failed while its backend's breaker
    # opened: the backend was down, not the job)
    sa.Column("spared_attempts", sa.Integer, nullable=False, server_default="0"),
    # a sandbox service's job: runs on procedural at 0 credits, "test": true in its payloads
    sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
    # the ended job that POST /v1/jobs/{id}/retry made this one from (0008); None for a trigger's
    sa.Column("retry_of", sa.String(40), nullable=True),
    # the batch that created it (0009), None for a single trigger
    sa.Column("batch_id", sa.String(40), nullable=True),
)
# the trigger envelope's deadline, epoch seconds (0011): the claim never starts a job past it,
# and the expiry sweep ends the waiting ones past it (ix_jobs_deadline)
jobs.append_column(sa.Column("deadline", Time, nullable=True))
# The claim query reads only these rows: a partial index keeps it fast at any table size.
sa.Index(
    "ix_jobs_claimable",
    jobs.c.run_after,
    sqlite_where=jobs.c.status.in_(list(CLAIMABLE_ORDER)),
    postgresql_where=jobs.c.status.in_(list(CLAIMABLE_ORDER)),
)
sa.Index(
    "ix_jobs_leased",
    jobs.c.lease_expires,
    sqlite_where=jobs.c.status == JobStatus.RUNNING,
    postgresql_where=jobs.c.status == JobStatus.RUNNING,
)
sa.Index("ix_jobs_service_external", jobs.c.service_id, jobs.c.external_id)
# the purge: a service's ended jobs, oldest first (0007)
sa.Index(
    "ix_jobs_service_finished",
    jobs.c.service_id,
    jobs.c.finished_at,
    sqlite_where=jobs.c.finished_at.is_not(None),
    postgresql_where=jobs.c.finished_at.is_not(None),
)
# the listing (GET /v1/jobs, 0008): a service's jobs newest first, all, by status, by workflow;
# each a range read of a page from its keyset cursor (created_at, id)
sa.Index("ix_jobs_service_created", jobs.c.service_id, jobs.c.created_at.desc(), jobs.c.id.desc())
sa.Index(
    "ix_jobs_service_status_created",
    jobs.c.service_id,
    jobs.c.status,
    jobs.c.created_at.desc(),
    jobs.c.id.desc(),
)
sa.Index(
    "ix_jobs_service_workflow_created",
    jobs.c.service_id,
    jobs.c.workflow_id,
    jobs.c.created_at.desc(),
    jobs.c.id.desc(),
)
sa.Index(
    "ix_jobs_retry_of",
    jobs.c.retry_of,
    sqlite_where=jobs.c.retry_of.is_not(None),
    postgresql_where=jobs.c.retry_of.is_not(None),
)
# the expiry sweep: waiting jobs by deadline (0011)
sa.Index(
    "ix_jobs_deadline",
    jobs.c.deadline,
    sqlite_where=jobs.c.status.in_(list(CLAIMABLE_ORDER)),
    postgresql_where=jobs.c.status.in_(list(CLAIMABLE_ORDER)),
)
# the metrics' live jobs that are not claimable: running, and held for review (0013)
RUNNING_OR_HELD = [JobStatus.RUNNING, JobStatus.AWAITING_REVIEW]
sa.Index(
    "ix_jobs_running_or_held",
    jobs.c.service_id,
    jobs.c.workflow_id,
    sqlite_where=jobs.c.status.in_(RUNNING_OR_HELD),
    postgresql_where=jobs.c.status.in_(RUNNING_OR_HELD),
)
# the fair claim: per service, its claimable jobs in priority order, then by eligible_at
sa.Index(
    "ix_jobs_service_claimable",
    jobs.c.service_id,
    jobs.c.priority.desc(),
    jobs.c.run_after,
    jobs.c.id,
    sqlite_where=jobs.c.status.in_(list(CLAIMABLE_ORDER)),
    postgresql_where=jobs.c.status.in_(list(CLAIMABLE_ORDER)),
)
# the rate window: a service's start slots, and its real starts
sa.Index(
    "ix_jobs_service_slot",
    jobs.c.service_id,
    jobs.c.rate_seq,
    sqlite_where=jobs.c.rate_seq.is_not(None),
    postgresql_where=jobs.c.rate_seq.is_not(None),
)
sa.Index(
    "ix_jobs_service_started",
    jobs.c.service_id,
    jobs.c.start_seq,
    sqlite_where=jobs.c.start_seq.is_not(None),
    postgresql_where=jobs.c.start_seq.is_not(None),
)
sa.Index(
    "ix_jobs_dedup",
    jobs.c.service_id,
    jobs.c.dedup_key,
    jobs.c.created_at,
    sqlite_where=jobs.c.dedup_key.is_not(None),
    postgresql_where=jobs.c.dedup_key.is_not(None),
)
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
    # what the attempt ran on, made ({"image": 6, "video_seconds": 0}) and cost
    sa.Column("backend", sa.String(40), nullable=True),
    sa.Column("made", sa.JSON, nullable=True),
    sa.Column("credit_cost", sa.Float, nullable=False, server_default="0"),
)
sa.Index("ix_job_attempts_backend_started", attempts.c.backend, attempts.c.started_at)

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
    # None for an operator event (kind alert)
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=True, index=True),
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), nullable=True),
    # callback (a job's payload, signed with its service's secret) | alert (an operator event,
    # signed with GENHOOK_ALERT_SECRET)
    sa.Column("kind", sa.String(16), nullable=False, server_default="callback"),
    # scheme://host:port of url: the endpoint whose breaker and in-flight cap apply
    sa.Column("endpoint", sa.String(300), nullable=True),
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
    # a batch callback's batch (0009): job_id is None then, kind "batch"
    sa.Column("batch_id", sa.String(40), nullable=True),
)
sa.Index(
    "ix_deliveries_due",
    deliveries.c.next_attempt_at,
    sqlite_where=deliveries.c.status == DeliveryStatus.PENDING,
    postgresql_where=deliveries.c.status == DeliveryStatus.PENDING,
)
# the operator's failed deliveries (a handful among all), newest first, without a scan
sa.Index(
    "ix_deliveries_failed",
    deliveries.c.created_at,
    sqlite_where=deliveries.c.status == DeliveryStatus.FAILED,
    postgresql_where=deliveries.c.status == DeliveryStatus.FAILED,
)
# a claim's candidates: per (service, endpoint) its first due deliveries, by seeks (0006)
sa.Index(
    "ix_deliveries_pending_pair",
    deliveries.c.service_id,
    deliveries.c.endpoint,
    deliveries.c.next_attempt_at,
    deliveries.c.id,
    sqlite_where=deliveries.c.status == DeliveryStatus.PENDING,
    postgresql_where=deliveries.c.status == DeliveryStatus.PENDING,
)
# attempts in flight (the sender's caps count them) and abandoned ones, without a scan
sa.Index(
    "ix_deliveries_sending",
    deliveries.c.lease_expires,
    sqlite_where=deliveries.c.status == DeliveryStatus.SENDING,
    postgresql_where=deliveries.c.status == DeliveryStatus.SENDING,
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


# ---- flow control and cost (issue 7) -------------------------------------------------------

# one row per service per UTC day: what was spent (settled) and what running jobs hold reserved,
# and which budget thresholds have sent their operator event that day
credit_ledger = sa.Table(
    "credit_ledger",
    metadata,
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
    sa.Column("spent", sa.Float, nullable=False, server_default="0"),
    sa.Column("reserved", sa.Float, nullable=False, server_default="0"),
    sa.Column("alerted_80", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("alerted_100", sa.Boolean, nullable=False, server_default=sa.false()),
)

# a generation backend's breaker: closed (in use), open (its jobs wait, probes test it)
backend_state = sa.Table(
    "backend_state",
    metadata,
    sa.Column("backend", sa.String(40), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False, server_default="closed"),
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),  # in a row
    sa.Column("opened_at", Time, nullable=True),
    sa.Column("probe_at", Time, nullable=True),  # when the next probe may run
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("updated_at", Time, nullable=False),
)

# a callback endpoint (scheme://host:port) of a service: disabled after failing for long
endpoints = sa.Table(
    "endpoints",
    metadata,
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), primary_key=True),
    sa.Column("endpoint", sa.String(300), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False, server_default="enabled"),
    sa.Column("failing_since", Time, nullable=True),  # first failure since the last success
    sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("disabled_at", Time, nullable=True),
    sa.Column("updated_at", Time, nullable=False),
)

# every operator event, as logged (and outboxed to GENHOOK_ALERT_URL when one is set)
operator_events = sa.Table(
    "operator_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # the alert's webhook-id
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("service", sa.String(100), nullable=True),  # the service's name
    sa.Column("at", Time, nullable=False, index=True),
    sa.Column("details", sa.JSON, nullable=True),
)

# per service, workflow and hour: what /v1/ops/summary and the dashboard show, kept up to date
# in the transactions that change it, so that no figure scans the jobs table
job_rollups = sa.Table(
    "job_rollups",
    metadata,
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), primary_key=True),
    sa.Column("workflow_id", sa.String(64), primary_key=True),
    sa.Column("bucket", Time, primary_key=True),  # the hour's start, epoch seconds
    sa.Column("triggers", sa.Integer, nullable=False, server_default="0"),
    sa.Column("refused", sa.Integer, nullable=False, server_default="0"),
    sa.Column("completed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cancelled", sa.Integer, nullable=False, server_default="0"),
    # jobs whose trigger's deadline passed before they started (0011)
    sa.Column("expired", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("generation_seconds", sa.Float, nullable=False, server_default="0"),
    sa.Column("qc_checked", sa.Integer, nullable=False, server_default="0"),
    sa.Column("qc_passed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("credits", sa.Float, nullable=False, server_default="0"),
)
# a window's roll-ups (every service's last hours) are a range of buckets
sa.Index("ix_job_rollups_bucket", job_rollups.c.bucket)

# one compact row per job that retention purged (0007): its URLs answer 410 Gone, not 404, and
# its assets are deleted after the purge's transaction commits (assets_deleted_at None: still to
# do, also after a crash in between). Kept a year (genhook.retention.TOMBSTONE_SECONDS)
purged_jobs = sa.Table(
    "purged_jobs",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), nullable=False),
    sa.Column("finished_at", Time, nullable=True),
    sa.Column("purged_at", Time, nullable=False, index=True),
    sa.Column("assets_deleted_at", Time, nullable=True),
)
sa.Index(
    "ix_purged_jobs_assets_pending",
    purged_jobs.c.purged_at,
    sqlite_where=purged_jobs.c.assets_deleted_at.is_(None),
    postgresql_where=purged_jobs.c.assets_deleted_at.is_(None),
)


# ---- schedules (issue 11, 0012) ---------------------------------------------------------------

# one row per template schedule (key WORKFLOW:ID) that a scheduler has seen: when it is due next
# (computed from its cron; spec_hash: the cron and time zone it was computed from), whether an
# operator or its service paused it, and what its last due time came to
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("key", sa.String(140), primary_key=True),
    sa.Column("workflow_id", sa.String(64), nullable=False),
    sa.Column("schedule_id", sa.String(64), nullable=False),
    sa.Column("spec_hash", sa.String(16), nullable=False),
    sa.Column("next_due_at", Time, nullable=True),
    sa.Column("paused_at", Time, nullable=True),
    sa.Column("paused_by", sa.String(100), nullable=True),
    sa.Column("last_due_at", Time, nullable=True),  # the due time last fired, skipped or failed
    sa.Column("last_fired_at", Time, nullable=True),  # when that was done
    sa.Column("last_outcome", sa.String(16), nullable=True),  # fired | skipped | failed
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)
sa.Index("ix_schedules_next_due", schedules.c.next_due_at)
# one row per due time dealt with: the primary key is what makes each due time fire exactly
# once, whatever the number of schedulers (inserted in the transaction that admits its jobs)
schedule_fires = sa.Table(
    "schedule_fires",
    metadata,
    sa.Column("schedule_key", sa.String(140), primary_key=True),
    sa.Column("due_at", Time, primary_key=True),
    sa.Column("fired_at", Time, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # fired | skipped | failed
    sa.Column("service_id", sa.String(40), nullable=True),
    sa.Column("created", sa.Integer, nullable=False, server_default="0"),  # jobs it made
    sa.Column("replayed", sa.Integer, nullable=False, server_default="0"),  # idempotent matches
    sa.Column("refused", sa.Integer, nullable=False, server_default="0"),  # items refused
    sa.Column("missed", sa.Integer, nullable=False, server_default="0"),  # due times passed over
    sa.Column("job_ids", sa.JSON, nullable=True),
    sa.Column("errors", sa.JSON, nullable=True),  # [{"index", "error"}], the first 100
    sa.Column("error", sa.Text, nullable=True),  # why a failed fire made no job
)

# ---- review (issue 11, 0010) ------------------------------------------------------------------

# one row per time a job was held for a person's review (a QC policy of on_fail: review): the
# candidate payload it would deliver and its quality reports; then the decision (approve, reject,
# cancelled), the note, the edited alt text and caption, who and when. Pending: decided_at None
job_reviews = sa.Table(
    "job_reviews",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), nullable=False),
    sa.Column("round", sa.Integer, nullable=False),  # 1, 2, ...: a rejected job is held again
    sa.Column("held_at", Time, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("quality", sa.JSON, nullable=True),
    sa.Column("decision", sa.String(16), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Column("alt_text", sa.Text, nullable=True),
    sa.Column("caption", sa.Text, nullable=True),
    sa.Column("decided_by", sa.String(100), nullable=True),
    sa.Column("decided_at", Time, nullable=True),
)
sa.Index("ux_job_reviews_round", job_reviews.c.job_id, job_reviews.c.round, unique=True)
sa.Index(
    "ix_job_reviews_pending",
    job_reviews.c.service_id,
    job_reviews.c.held_at,
    sqlite_where=job_reviews.c.decided_at.is_(None),
    postgresql_where=job_reviews.c.decided_at.is_(None),
)

# a batch of triggers (0009): its items' answers, and how many of its jobs have not ended yet
batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), nullable=False),
    sa.Column("workflow_id", sa.String(64), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),  # its items
    sa.Column("created", sa.Integer, nullable=False),  # the jobs it created
    sa.Column("open", sa.Integer, nullable=False),  # of those, not ended yet
    # per item, in order: {"index", "job_id"} or {"index", "error"}
    sa.Column("items", sa.JSON, nullable=False),
    sa.Column("callback_url", sa.Text, nullable=True),
    sa.Column("callback_private", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("ended_at", Time, nullable=True),  # when its last job ended
)
sa.Index("ix_batches_service_created", batches.c.service_id, batches.c.created_at)
# the purge's candidates: a service's ended batches, oldest first (0014)
sa.Index(
    "ix_batches_service_ended",
    batches.c.service_id,
    batches.c.ended_at,
    sqlite_where=batches.c.ended_at.is_not(None),
    postgresql_where=batches.c.ended_at.is_not(None),
)
# one compact row per batch that retention purged (0014): GET /v1/batches/{id} answers 410
# Gone, not 404. Kept a year, as purged_jobs
purged_batches = sa.Table(
    "purged_batches",
    metadata,
    sa.Column("batch_id", sa.String(40), primary_key=True),
    sa.Column("service_id", sa.String(40), sa.ForeignKey("services.id"), nullable=False),
    sa.Column("ended_at", Time, nullable=True),
    sa.Column("purged_at", Time, nullable=False, index=True),
)
sa.Index(
    "ix_jobs_batch",
    jobs.c.batch_id,
    sqlite_where=jobs.c.batch_id.is_not(None),
    postgresql_where=jobs.c.batch_id.is_not(None),
)


def claimable(column: sa.ColumnElement[str] = jobs.c.status) -> sa.ColumnElement[bool]:
    """``status IN ('queued', 'retrying')`` with the values inline, in the partial indexes'
    order, so that SQLite uses them (with bound parameters it scans every job ever made)."""
    return column.in_(
        sa.bindparam(
            "claimable_states",
            [str(s) for s in CLAIMABLE_ORDER],
            expanding=True,
            literal_execute=True,
        )
    )
