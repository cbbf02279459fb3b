"""Alembic's environment for the journal: migrate on the connection the store hands over.

The store (crosslink.journal.store) opens its engine and runs `upgrade head` on one of its
connections, so the same code migrates SQLite and PostgreSQL; there is no alembic.ini.
"""

from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
