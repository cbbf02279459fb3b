"""Versions of each link's rules, and the proposals, approvals, rejections and withdrawals on them.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mapping_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("link", sa.String(100), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("rules_hash", sa.String(64), nullable=False),
        sa.Column("rules", sa.Text, nullable=False),
        sa.Column("needs", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("proposed_at", sa.String(40), nullable=False),
        sa.Column("proposed_by", sa.String(100), nullable=True),
        sa.Column("activated_at", sa.String(40), nullable=True),
        sa.Column("closed_at", sa.String(40), nullable=True),
        sa.UniqueConstraint("link", "number", name="mapping_versions_link_number"),
    )
    op.create_table(
        "mapping_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("link", sa.String(100), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("side", sa.String(16), nullable=True),
        sa.Column("person", sa.String(100), nullable=True),
        sa.Column("at", sa.String(40), nullable=False),
    )
    op.create_index("mapping_events_link_number", "mapping_events", ["link", "number"])


def downgrade() -> None:
    op.drop_index("mapping_events_link_number", "mapping_events")
    op.drop_table("mapping_events")
    op.drop_table("mapping_versions")
