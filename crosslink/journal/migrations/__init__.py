"""Alembic migrations of the journal's tables (crosslink.journal.store runs them on open)."""
