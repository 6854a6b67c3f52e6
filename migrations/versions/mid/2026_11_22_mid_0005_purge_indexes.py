"""Housekeeping at volume: an index for the purge of final messages

ix_broad_log_final (final_at, id) over final messages only: the SMS process's purge walks
it in keyset order, a bounded batch a statement, without scanning the queue's pending rows
nor the messages still waiting for a receipt (sms_process.process.PURGE_BROAD_LOG).
Built CONCURRENTLY: broad_log may hold millions of rows and the MTA keeps sending meanwhile.

Revision ID: mid_0005
Revises: mid_0004
Create Date: 2026-11-22 00:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mid_0005"
down_revision: str | None = "mid_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINAL = sa.text("status IN ('delivered', 'failed', 'cancelled')")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_broad_log_final",
            "broad_log",
            ["final_at", "id"],
            unique=False,
            schema="mid",
            postgresql_where=FINAL,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_broad_log_final",
            table_name="broad_log",
            schema="mid",
            postgresql_where=FINAL,
            postgresql_concurrently=True,
            if_exists=True,
        )
