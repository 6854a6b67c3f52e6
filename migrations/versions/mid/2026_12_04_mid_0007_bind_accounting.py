"""Every bind counted: bind slots for every service, replies through the MTA

`reply_outbox`: the auto-replies the SMS process decided, committed with their MO, until
an MTA child has sent them on its binds (the SMS process opens no transmitter). Bind
slots keep their table: their owners (`mta_lease` rows) are now MTA children, the SMS
process and the go-live check alike.

Revision ID: mid_0007
Revises: mid_0006
Create Date: 2026-12-04 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "mid_0007"
down_revision: str | None = "mid_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reply_outbox",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("source_addr", sa.String(length=21), nullable=False),
        sa.Column("source_ton", sa.SmallInteger(), nullable=False),
        sa.Column("source_npi", sa.SmallInteger(), nullable=False),
        sa.Column("destination_addr", sa.String(length=21), nullable=False),
        sa.Column("dest_ton", sa.SmallInteger(), nullable=False),
        sa.Column("dest_npi", sa.SmallInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mid.external_account.id"],
            name=op.f("fk_reply_outbox_account_id_external_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reply_outbox")),
        schema="mid",
    )
    op.create_index(
        "ix_reply_outbox_account", "reply_outbox", ["account_id", "id"], unique=False, schema="mid"
    )


def downgrade() -> None:
    op.drop_index("ix_reply_outbox_account", table_name="reply_outbox", schema="mid")
    op.drop_table("reply_outbox", schema="mid")
