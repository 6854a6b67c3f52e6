"""Migration mid_0006: stored numbers rewritten in the canonical form, blacklist merged."""

from __future__ import annotations

import psycopg
from sqlalchemy import URL

from smsmta.db import migrate
from smsmta.db.engine import libpq_dsn


def test_stored_numbers_become_canonical_and_duplicates_merge(fresh_db_url: URL) -> None:
    migrate.upgrade(fresh_db_url, "mid", "mid_0005")
    dsn = libpq_dsn(fresh_db_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        account = conn.execute(
            "INSERT INTO mid.external_account (internal_name, operator_login, marketing_account) "
            "VALUES ('ops_sms', 'ops', 'sms') RETURNING id"
        ).fetchone()[0]
        delivery = conn.execute(
            "INSERT INTO mid.delivery (account_id, marketing_delivery_id) VALUES (%s, 'd') "
            "RETURNING id",
            (account,),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO mid.short_code_blacklist (short_code, address, reason, since) VALUES "
            "('38000', '+33600000001', 'STOP', '2026-01-01'), "
            "('38000', '33600000001', 'STOP', '2025-01-01'), "  # the same handset: merged
            "('38000', '33600000021', 'STOP', '2026-01-01'), "  # TON 0, as once stored
            "('+38001', '0033600000022', 'ARRET', '2026-01-01'), "
            "('33700000000', '33600000023', 'STOP', '2026-01-01'), "
            "('38000', '0612345678', 'STOP', '2026-01-01')"  # national: kept as it is
        )
        conn.execute(
            "INSERT INTO mid.in_sms (account_id, source_addr, destination_addr, text, "
            "data_coding) VALUES (%s, '33600000021', '38000', 'STOP', 0), "
            "(%s, '+33600000001', '38000', 'STOP', 0)",
            (account, account),
        )
        conn.execute(
            "INSERT INTO mid.broad_log (delivery_id, account_id, marketing_message_id, address, "
            "text, status) VALUES (%s, %s, 1, '33600000001', 'x', 'pending'), "
            "(%s, %s, 2, '33600000002', 'x', 'sent')",
            (delivery, account, delivery, account),
        )
    migrate.upgrade(fresh_db_url, "mid", "mid_0006")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT short_code, address, reason, since::date::text FROM mid.short_code_blacklist "
            "ORDER BY 1, 2"
        ).fetchall()
        assert rows == [
            ("+33700000000", "+33600000023", "STOP", "2026-01-01"),
            ("38000", "+33600000001", "STOP", "2025-01-01"),
            ("38000", "+33600000021", "STOP", "2026-01-01"),
            ("38000", "0612345678", "STOP", "2026-01-01"),
            ("38001", "+33600000022", "ARRET", "2026-01-01"),
        ]
        assert conn.execute("SELECT source_addr FROM mid.in_sms ORDER BY id").fetchall() == [
            ("+33600000021",),
            ("+33600000001",),
        ]
        assert conn.execute(
            "SELECT address FROM mid.broad_log ORDER BY marketing_message_id"
        ).fetchall() == [("+33600000001",), ("33600000002",)]  # a sent row is history
    migrate.downgrade(fresh_db_url, "mid", "mid_0005")
    migrate.upgrade(fresh_db_url, "mid", "mid_0006")  # again: nothing left to change
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM mid.short_code_blacklist").fetchone() == (5,)
