"""Each entry's key: what it records, named so that recording it again (a retried run) finds it.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal_entries") as batch:
        batch.add_column(sa.Column("key", sa.String(300), nullable=True))
        batch.create_unique_constraint("journal_entries_link_key", ["link", "key"])


def downgrade() -> None:
    with op.batch_alter_table("journal_entries") as batch:
        batch.drop_constraint("journal_entries_link_key", type_="unique")
        batch.drop_column("key")
