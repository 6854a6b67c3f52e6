"""Each mid account records the host that owns it: hosts change only their own accounts

Every mid-side service syncs mid.external_account with its settings file at start, and
disabled every account its file did not list: a second host whose file listed fewer
accounts disabled the first host's. external_account gets owner_host_id, the `host_id`
of the settings file that wrote the row; a host upserts, disables and releases only the
rows it owns (or that nobody owns). Existing rows start with no owner: the first host
that lists an account takes it.

Downgrade: the column is dropped (ownership is re-learned at the next upgrade).

Revision ID: mid_0010
Revises: mid_0009
Create Date: 2026-12-04 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mid_0010"
down_revision: str | None = "mid_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "external_account",
        sa.Column("owner_host_id", sa.String(length=64), nullable=True),
        schema="mid",
    )


def downgrade() -> None:
    op.drop_column("external_account", "owner_host_id", schema="mid")
