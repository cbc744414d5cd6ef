"""review: jobs held for a person's review (a QC policy of ``on_fail: review``)

``job_reviews`` keeps one row per time a job was held (``round`` 1, 2, ... : a rejected job
generates again and may be held again): the candidate completion payload it would deliver
(``payload``: outputs with their asset URLs, SEO text, metadata, ``quality_warning``), the
quality reports (``quality``), and once a person decided, the ``decision`` (approve, reject,
cancelled), the ``note``, the edited ``alt_text`` and ``caption``, who (``decided_by``) and
when (``decided_at``). The rows of a job that is held now are those with ``decided_at`` NULL
(``ix_job_reviews_pending``, partial). A job's reviews go with it when retention purges it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "job_reviews",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("held_at", Time, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("alt_text", sa.Text(), nullable=True),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.String(length=100), nullable=True),
        sa.Column("decided_at", Time, nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ux_job_reviews_round", "job_reviews", ["job_id", "round"], unique=True)
    op.create_index(
        "ix_job_reviews_pending",
        "job_reviews",
        ["service_id", "held_at"],
        sqlite_where=sa.text("decided_at IS NULL"),
        postgresql_where=sa.text("decided_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_reviews_pending", table_name="job_reviews")
    op.drop_index("ux_job_reviews_round", table_name="job_reviews")
    op.drop_table("job_reviews")
