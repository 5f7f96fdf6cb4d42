"""The faust detector: per-partition ingest progress (the event-time watermark) and one event id per alert event.

- ingest_progress: per series and input partition, the newest window a committed batch wrote. The detector
  closes a window only when every active partition has passed it, so a replay that runs one partition ahead
  of another does not close windows early.
- alert_deliveries.webhook_id: one id per alert event, shared by its receivers and its finsentry.alerts
  record (unique per endpoint instead of per row).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ingest_progress",
        sa.Column("series", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.drop_constraint("alert_deliveries_webhook_id_key", "alert_deliveries", type_="unique")
    op.create_unique_constraint("uq_alert_deliveries_event_endpoint", "alert_deliveries",
                                ["webhook_id", "endpoint_url"])


def downgrade() -> None:
    op.drop_constraint("uq_alert_deliveries_event_endpoint", "alert_deliveries", type_="unique")
    op.execute("UPDATE alert_deliveries SET webhook_id = webhook_id || '_' || id")
    op.create_unique_constraint("alert_deliveries_webhook_id_key", "alert_deliveries", ["webhook_id"])
    op.drop_table("ingest_progress")
