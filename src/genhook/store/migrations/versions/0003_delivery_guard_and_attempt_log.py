"""deliveries: the trigger's callback policy, the sender's lease owner, attempts logged up front

jobs.callback_private keeps the SSRF decision taken when the trigger was accepted, so that the
sender applies that decision, not its own process's setting. deliveries.lease_owner names the
outbox that holds a delivery, so that a restarted one can take back what a dead one held.
delivery_attempts.state: an attempt is written ("sending") before its request goes out and
completed ("done") after; one whose sender died stays in the log ("interrupted").

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("callback_private", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=120), nullable=True))
    with op.batch_alter_table("delivery_attempts") as batch:
        batch.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="done")
        )
        batch.alter_column("duration_ms", existing_type=sa.Float(), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE delivery_attempts SET duration_ms = 0 WHERE duration_ms IS NULL")
    with op.batch_alter_table("delivery_attempts") as batch:
        batch.alter_column("duration_ms", existing_type=sa.Float(), nullable=False)
        batch.drop_column("state")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("lease_owner")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("callback_private")
