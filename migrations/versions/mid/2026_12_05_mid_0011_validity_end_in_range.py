"""Deliveries stored with a validity end past 2099 (UTC) are brought back to its last second

Before the API checked a `validity_end` once converted to UTC, an offset such as -23:59
on 9999-12-31T23:59 was stored as a year-10000 timestamp: PostgreSQL keeps it, Python's
datetime cannot read it, and every route naming the delivery answered 500 for good. The
SMPP validity period cannot say more than 2099 anyway (absolute times are YYMMDD...), so
such rows take 2099-12-31T23:59:59Z, the latest it can say.

Downgrade: nothing to undo (the old values were unreadable).

Revision ID: mid_0011
Revises: mid_0010
Create Date: 2026-12-05 02:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "mid_0011"
down_revision: str | None = "mid_0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LAST = "2099-12-31 23:59:59+00"


def upgrade() -> None:
    op.execute(f"UPDATE mid.delivery SET validity_end = '{LAST}' WHERE validity_end > '{LAST}'")


def downgrade() -> None:
    pass
