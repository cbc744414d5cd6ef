"""Durable state behind one interface: SQLite (embedded default) and PostgreSQL."""
