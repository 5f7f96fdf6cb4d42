"""Model lifecycle: evaluation beside each registered version, one champion at most, drift checks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_versions", sa.Column(
        "evaluation", postgresql.JSONB(), comment="champion's metrics on the same sets, held-back corrections"))
    op.alter_column("model_versions", "status", existing_type=sa.String(16), existing_nullable=False,
                    comment="champion, challenger, rejected, retired or rolled_back",
                    existing_comment="champion, challenger, rejected or retired")
    op.create_index("uq_model_versions_one_champion", "model_versions", [sa.text("(true)")], unique=True,
                    postgresql_where=sa.text("status = 'champion'"))
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("model_version", sa.Text(), nullable=False),
        sa.Column("reference_n", sa.Integer(), nullable=False),
        sa.Column("recent_n", sa.Integer(), nullable=False),
        sa.Column("topic_js", sa.Double(), nullable=False,
                  comment="Jensen-Shannon divergence (base 2) of topic shares"),
        sa.Column("sentiment_js", sa.Double(), nullable=False),
        sa.Column("confidence_drop", sa.Double(), nullable=False,
                  comment="reference minus recent mean topic probability"),
        sa.Column("drifted", sa.Boolean(), nullable=False),
        sa.Column("triggered_training", sa.Boolean(), nullable=False),
    )
    # A rollback or a drift check scans one version's rows in time order.
    op.create_index("ix_classified_messages_model_version", "classified_messages",
                    ["model_version", "classified_at"])


def downgrade() -> None:
    op.drop_index("ix_classified_messages_model_version", table_name="classified_messages")
    op.drop_table("drift_checks")
    op.drop_index("uq_model_versions_one_champion", table_name="model_versions")
    op.alter_column("model_versions", "status", existing_type=sa.String(16), existing_nullable=False,
                    comment="champion, challenger, rejected or retired",
                    existing_comment="champion, challenger, rejected, retired or rolled_back")
    op.drop_column("model_versions", "evaluation")
