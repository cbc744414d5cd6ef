"""Alembic environment: runs genhook's migrations on the connection it is handed."""

from __future__ import annotations

from alembic import context

from genhook.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - genhook always passes its own connection
    raise RuntimeError("genhook migrations run through genhook.store.migrate")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
