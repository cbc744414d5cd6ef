"""Bring a database to the newest schema with Alembic (run at every start; idempotent)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x67686D67  # "ghmg": the advisory lock that serialises upgrades (PostgreSQL)


def alembic_config(connection: sa.Connection) -> Config:
    """An Alembic config bound to ``connection``, with genhook's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine) -> None:
    """Apply every migration not yet applied. On PostgreSQL the upgrade holds a transaction-
    scoped advisory lock, so processes that start at once (several machines on a new or just
    upgraded database) take turns: the first migrates, the others then find the schema at head
    (without it, all but one failed on the tables the first had just created)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # a data migration on a big table may take longer than a request's statement
            # timeout (GENHOOK_DB_STATEMENT_TIMEOUT); the lock wait too, while another migrates
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
        command.upgrade(alembic_config(connection), "head")
