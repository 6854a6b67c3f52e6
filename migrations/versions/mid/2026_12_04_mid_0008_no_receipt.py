"""A message that never gets its receipt ends: status no_receipt, counted, purgeable

A message the SMSC acknowledged whose receipt never comes used to stay `sent` for ever:
never final, never purged, never in the final KPIs. The SMS process now closes a
delivery's receipts once its validity plus `receipt_match_wait` is over: its messages
still `sent` become `no_receipt` (final, with final_at), counted in the new
delivery.no_receipt KPI, and `receipts_closed_at` records that the delivery was closed
(so it is never scanned again). ix_broad_log_final is rebuilt to cover the new final
status (the purge walks it), CONCURRENTLY: broad_log may hold millions of rows.

Downgrade: no_receipt rows go back to `sent` (the enum value itself stays: PostgreSQL
cannot drop an enum value; harmless), the columns are dropped and the index is rebuilt
as it was.

Revision ID: mid_0008
Revises: mid_0007
Create Date: 2026-12-04 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mid_0008"
down_revision: str | None = "mid_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINAL = "status IN ('delivered', 'failed', 'cancelled', 'no_receipt')"
FINAL_BEFORE = "status IN ('delivered', 'failed', 'cancelled')"


def _rebuild_final_index(predicate: str) -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX IF EXISTS mid.ix_broad_log_final_new")
        op.execute(
            "CREATE INDEX CONCURRENTLY ix_broad_log_final_new ON mid.broad_log "
            f"(final_at, id) WHERE {predicate}"
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS mid.ix_broad_log_final")
        op.execute("ALTER INDEX mid.ix_broad_log_final_new RENAME TO ix_broad_log_final")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE mid.message_status ADD VALUE IF NOT EXISTS 'no_receipt'")
    op.add_column(
        "delivery",
        sa.Column("no_receipt", sa.Integer(), server_default="0", nullable=False),
        schema="mid",
    )
    op.add_column(
        "delivery",
        sa.Column("receipts_closed_at", sa.DateTime(timezone=True), nullable=True),
        schema="mid",
    )
    _rebuild_final_index(FINAL)


def downgrade() -> None:
    op.execute(
        "UPDATE mid.broad_log SET status = 'sent', final_at = NULL WHERE status = 'no_receipt'"
    )
    op.drop_column("delivery", "receipts_closed_at", schema="mid")
    op.drop_column("delivery", "no_receipt", schema="mid")
    _rebuild_final_index(FINAL_BEFORE)
