"""Canonical subscriber numbers (E.164) in every stored address

Issue 13: a STOP stored as `33600000021` never met an MT queued as `+33600000021`. From
now on every entry stores `+<E.164 digits>` (smsmta.numbers); this rewrites the rows
stored before, where the canonical form follows from the row alone, without an
account's default country (a migration cannot read the settings files):

- a digits-only number of 11 to 15 digits not starting with 0 (an international number
  written without its `+`) gets its `+`; `00` followed by 8 to 15 digits becomes `+`;
- in `mid.short_code_blacklist` the address is rewritten so, and the short code gets the
  form of smsmta.numbers.sender_key (a short code written `+38000` becomes `38000`, a
  long number `33700000000` becomes `+33700000000`); rows that become the same
  (short code, address) are merged, keeping the oldest;
- `mid.in_sms.source_addr` (the MO senders) and the addresses of `mid.broad_log` rows
  still `pending` (queued, not yet claimed).
National numbers (a leading 0) stay as they are: the claim canonicalises queued
addresses with the account's default country when it compares them, and a blacklist
entry in national form can be added again with `smsmta blacklist add`.

Downgrade leaves the data as it is (the canonical form was always a valid address).

Revision ID: mid_0006
Revises: mid_0005
Create Date: 2026-12-04 18:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "mid_0006"
down_revision: str | None = "mid_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_REWRITTEN = "^([1-9][0-9]{10,14}|00[1-9][0-9]{7,14})$"
"""The numbers `_canonical` changes."""


def _canonical(column: str) -> str:
    """SQL: the canonical form of a subscriber number column, where the row alone says it."""
    return (
        f"CASE WHEN {column} ~ '^[1-9][0-9]{{10,14}}$' THEN '+' || {column} "
        f"WHEN {column} ~ '^00[1-9][0-9]{{7,14}}$' THEN '+' || substr({column}, 3) "
        f"ELSE {column} END"
    )


def _sender_key(column: str) -> str:
    """SQL: smsmta.numbers.sender_key of a short code column, where the row alone says it."""
    return (
        f"CASE WHEN {column} ~ '^\\+[0-9]{{1,8}}$' THEN substr({column}, 2) "
        f"ELSE {_canonical(column)} END"
    )


def upgrade() -> None:
    op.execute(
        "CREATE TEMP TABLE canonical_blacklist ON COMMIT DROP AS "
        f"SELECT {_sender_key('short_code')} AS short_code, {_canonical('address')} AS address, "
        "reason, since, short_code AS old_short_code, address AS old_address "
        "FROM mid.short_code_blacklist"
    )
    op.execute(
        "DELETE FROM canonical_blacklist "
        "WHERE short_code = old_short_code AND address = old_address"
    )
    op.execute(
        "DELETE FROM mid.short_code_blacklist s USING canonical_blacklist c "
        "WHERE s.short_code = c.old_short_code AND s.address = c.old_address"
    )
    op.execute(
        "INSERT INTO mid.short_code_blacklist (short_code, address, reason, since) "
        "SELECT DISTINCT ON (short_code, address) short_code, address, reason, since "
        "FROM canonical_blacklist ORDER BY short_code, address, since "
        "ON CONFLICT (short_code, address) DO UPDATE "
        "SET since = least(mid.short_code_blacklist.since, EXCLUDED.since)"
    )
    op.execute("DROP TABLE canonical_blacklist")
    op.execute(
        f"UPDATE mid.in_sms SET source_addr = {_canonical('source_addr')} "
        f"WHERE source_addr ~ '{_REWRITTEN}'"
    )
    op.execute(
        f"UPDATE mid.broad_log SET address = {_canonical('address')} "
        f"WHERE status = 'pending' AND address ~ '{_REWRITTEN}'"
    )


def downgrade() -> None:
    # the canonical form was always a valid address: nothing to undo
    pass
