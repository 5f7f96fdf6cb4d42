"""Privacy: stored text may be deleted after the retention period (trends stay).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COMMENT = "social posts: e-mails and phone numbers masked; NULL after retention"


def upgrade() -> None:
    op.alter_column("classified_messages", "text", existing_type=sa.Text(), nullable=True, comment=COMMENT)
    # Retention scans by publication time for rows that still hold text.
    op.create_index("ix_classified_messages_retention", "classified_messages", ["published_at"],
                    postgresql_where=sa.text("text IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_classified_messages_retention", table_name="classified_messages")
    op.execute("UPDATE classified_messages SET text = '' WHERE text IS NULL")
    op.alter_column("classified_messages", "text", existing_type=sa.Text(), nullable=False, comment=None,
                    existing_comment=COMMENT)
