"""Stories, authors and coordinated activity.

- classified_messages.story_id and author_key (bigint, NULL for rows stored before: each such row counts
  as a story of its own, by no known author), series (the trend series whose worker stored the row; 'live'
  for rows stored before), and an index on window_start for the detector's per-window reads;
- window_diversity: per closed window of a watched key, distinct stories and authors and the effective
  counts detection ran on; the analyst role reads it through topic_diversity_minute;
- alerts.kind ('sentiment' or 'coordinated'), part of the alert's unique key, and alert_deliveries.event
  wide enough for "coordinated.resolved".

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ROLE = "finsentry_analyst"
TZ = sa.DateTime(timezone=True)
VIEW = """
CREATE VIEW topic_diversity_minute AS
SELECT window_start AS minute, key AS topic, n_messages, n_stories, n_authors, n_effective, n_effective_negative,
       excess, coordinated
FROM window_diversity WHERE series = 'live' AND dimension = 'topic'
"""


def upgrade() -> None:
    op.add_column("classified_messages", sa.Column("story_id", sa.BigInteger,
                                                   comment="near-duplicate texts share one (workers/pipeline/stories.py)"))
    op.add_column("classified_messages", sa.Column("author_key", sa.BigInteger,
                                                   comment="a hash of (source, author); NULL when the feed names none"))
    op.add_column("classified_messages", sa.Column("series", sa.Text, nullable=False, server_default="live",
                                                   comment="the trend series whose worker stored it (a demo's messages are not live ones)"))
    op.create_index("ix_classified_messages_window", "classified_messages", ["window_start"])
    op.create_table(
        "window_diversity",
        sa.Column("series", sa.Text, primary_key=True),
        sa.Column("dimension", sa.String(16), primary_key=True),
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("window_start", TZ, primary_key=True),
        *[sa.Column(name, sa.BigInteger, nullable=False) for name in (
            "n_messages", "n_stories", "n_authors", "n_effective", "n_effective_negative")],
        sa.Column("excess", sa.BigInteger, nullable=False, comment="messages beyond the effective count"),
        sa.Column("coordinated", sa.Boolean, nullable=False),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_window_diversity_window", "window_diversity", ["window_start"])
    op.add_column("alerts", sa.Column("kind", sa.String(16), nullable=False, server_default="sentiment",
                                      comment="sentiment (a negative spike) or coordinated (a burst of few stories "
                                              "or accounts)"))
    op.drop_constraint("uq_alerts_key_window", "alerts", type_="unique")
    op.create_unique_constraint("uq_alerts_key_kind_window", "alerts",
                                ["series", "dimension", "key", "kind", "window_start"])
    op.alter_column("alert_deliveries", "event", type_=sa.String(32),
                    comment="alert.opened, alert.resolved, coordinated.opened or coordinated.resolved",
                    existing_comment="alert.opened or alert.resolved")
    op.execute(VIEW)
    op.execute(f"GRANT SELECT ON topic_diversity_minute TO {ROLE}")


def downgrade() -> None:
    op.execute("DROP VIEW topic_diversity_minute")
    op.execute("DELETE FROM delivery_attempts WHERE delivery_id IN "
               "(SELECT id FROM alert_deliveries WHERE event LIKE 'coordinated.%')")
    op.execute("DELETE FROM alert_deliveries WHERE event LIKE 'coordinated.%'")
    op.alter_column("alert_deliveries", "event", type_=sa.String(16), comment="alert.opened or alert.resolved",
                    existing_comment="alert.opened, alert.resolved, coordinated.opened or coordinated.resolved")
    op.execute("DELETE FROM alerts WHERE kind = 'coordinated'")
    op.drop_constraint("uq_alerts_key_kind_window", "alerts", type_="unique")
    op.create_unique_constraint("uq_alerts_key_window", "alerts", ["series", "dimension", "key", "window_start"])
    op.drop_column("alerts", "kind")
    op.drop_index("ix_window_diversity_window", "window_diversity")
    op.drop_table("window_diversity")
    op.drop_index("ix_classified_messages_window", "classified_messages")
    op.drop_column("classified_messages", "series")
    op.drop_column("classified_messages", "author_key")
    op.drop_column("classified_messages", "story_id")
