"""A message whose receipt never came: marketing status no_receipt and its KPI

The mid side ends the wait for a message's receipt once its validity plus
receipt_match_wait is over (mid_0008): the message becomes `no_receipt`, final. The
marketing side pulls that status like any other and counts it in delivery.no_receipt.

Downgrade: no_receipt messages go back to `sent` (the enum value stays: PostgreSQL
cannot drop one) and the KPI column is dropped.

Revision ID: marketing_0003
Revises: marketing_0002
Create Date: 2026-12-04 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "marketing_0003"
down_revision: str | None = "marketing_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("ALTER TYPE marketing.message_status ADD VALUE IF NOT EXISTS 'no_receipt'")
    op.add_column(
        "delivery",
        sa.Column("no_receipt", sa.Integer(), server_default="0", nullable=False),
        schema="marketing",
    )


def downgrade() -> None:
    op.execute("UPDATE marketing.delivery_message SET status = 'sent' WHERE status = 'no_receipt'")
    op.drop_column("delivery", "no_receipt", schema="marketing")
