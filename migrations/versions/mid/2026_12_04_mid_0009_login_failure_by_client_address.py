"""Failed logins are counted per (login, client address), not per login alone

A login's failures used to be counted for the login whatever address they came from, and
the block was checked before the password: anyone who knew a login could lock its operator
out, right password included. login_failure gets a client_address column (the address, or
an IPv6 address's /64; '' when unknown) and its primary key becomes (login,
client_address), so only the address that failed is slowed down for that login.

Downgrade: failures are transient (forgotten after an hour), so the rows are deleted
rather than merged, then the column is dropped and the key is the login again.

Revision ID: mid_0009
Revises: mid_0008
Create Date: 2026-12-04 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mid_0009"
down_revision: str | None = "mid_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "login_failure",
        sa.Column("client_address", sa.String(length=64), server_default="", nullable=False),
        schema="mid",
    )
    op.drop_constraint("pk_login_failure", "login_failure", type_="primary", schema="mid")
    op.create_primary_key(
        "pk_login_failure", "login_failure", ["login", "client_address"], schema="mid"
    )


def downgrade() -> None:
    op.execute("DELETE FROM mid.login_failure")
    op.drop_constraint("pk_login_failure", "login_failure", type_="primary", schema="mid")
    op.drop_column("login_failure", "client_address", schema="mid")
    op.create_primary_key("pk_login_failure", "login_failure", ["login"], schema="mid")
