"""A validity end stored past 2099 before the API refused it becomes readable again.

Issue 14: `validity_end` 9999-12-31T23:59:00-23:59 is year 10000 in UTC; PostgreSQL
stored it, psycopg cannot turn it into a datetime, and every route naming the delivery
answered 500 for good. The API now refuses it (tests/badinput/test_http_bounds.py);
migration mid_0011 brings rows stored before to 2099-12-31T23:59:59Z.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
from sqlalchemy import URL

from smsmta.db import migrate
from smsmta.db.engine import libpq_dsn


def test_a_year_10000_validity_end_is_brought_back_to_2099(fresh_db_url: URL) -> None:
    migrate.upgrade(fresh_db_url, "mid", "mid_0010")
    dsn = libpq_dsn(fresh_db_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        account = conn.execute(
            "INSERT INTO mid.external_account (internal_name, operator_login, marketing_account) "
            "VALUES ('ops_sms', 'ops', 'sms') RETURNING id"
        ).fetchone()[0]
        far = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=23, minutes=59)))
        conn.execute(  # as the API stored it: psycopg sends the instant, year 10000 in UTC
            "INSERT INTO mid.delivery (account_id, marketing_delivery_id, validity_end) VALUES "
            "(%s, 'far', %s), (%s, 'near', '2030-01-01T00:00:00Z')",
            (account, far, account),
        )
        with pytest.raises(psycopg.DataError):
            conn.execute("SELECT validity_end FROM mid.delivery").fetchall()
    migrate.upgrade(fresh_db_url, "mid", "mid_0011")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT marketing_delivery_id, validity_end FROM mid.delivery ORDER BY 1"
        ).fetchall()
    assert rows == [
        ("far", datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("near", datetime(2030, 1, 1, tzinfo=UTC)),
    ]
