"""The journal's first tables: entries, anchors, and each link's head.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("link", sa.String(100), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("source_task", sa.Integer, nullable=True),
        sa.Column("target_task", sa.Integer, nullable=True),
        sa.Column("content", sa.String(64), nullable=False),
        sa.Column("rules", sa.String(64), nullable=False),
        sa.Column("prev", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.UniqueConstraint("link", "seq", name="journal_entries_link_seq"),
    )
    op.create_index("journal_entries_source_task", "journal_entries", ["link", "source_task"])
    op.create_index("journal_entries_target_task", "journal_entries", ["link", "target_task"])
    op.create_table(
        "journal_anchors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("link", sa.String(100), nullable=False, index=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("side", sa.String(16), nullable=False),
        sa.Column("task", sa.Integer, nullable=True),
        sa.Column("comment", sa.Integer, nullable=True),
    )
    op.create_table(
        "journal_heads",
        sa.Column("link", sa.String(100), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("journal_heads")
    op.drop_table("journal_anchors")
    op.drop_index("journal_entries_target_task", "journal_entries")
    op.drop_index("journal_entries_source_task", "journal_entries")
    op.drop_table("journal_entries")
