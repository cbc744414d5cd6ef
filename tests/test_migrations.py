"""Migrations create exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from genhook.store.schema import metadata
from genhook.store.store import Store
from tests.databases import database_url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_matches_the_declared_schema(kind: str, tmp_path: Path) -> None:
    """After `upgrade head`, Alembic finds nothing to change; a second upgrade is a no-op."""
    with database_url(kind, tmp_path) as url:
        store = Store(url)
        try:
            store.migrate()
            store.migrate()
            with store.engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == []
            assert store.ping()
        finally:
            store.close()
