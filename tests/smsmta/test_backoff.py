"""smsmta.backoff: one doubling formula (a table, and the four formulas it replaced), and
the outage rule: logged once when the database is lost and once when it is back, the
password masked, with a real PostgreSQL connection made to fail (a port nobody serves)."""

from __future__ import annotations

import socket

import psycopg
import pytest
from sqlalchemy import URL
from structlog.testing import capture_logs

from smsmta.backoff import Backoff, Outage, dsn_password
from smsmta.db.engine import libpq_dsn
from smsmta.obs import MASK

# (first, maximum, n) -> delay
DELAYS = [
    (0.2, 5.0, 1, 0.2),
    (0.2, 5.0, 2, 0.4),
    (0.2, 5.0, 5, 3.2),
    (0.2, 5.0, 6, 5.0),
    (0.2, 5.0, 10_000, 5.0),  # no overflow, however long the outage
    (1.0, 30.0, 1, 1.0),
    (1.0, 30.0, 5, 16.0),
    (1.0, 30.0, 6, 30.0),
    (1.0, 1.0, 1, 1.0),
    (1.0, 1.0, 7, 1.0),
    (30.0, 60.0, 2, 60.0),
    (5.0, 1.0, 1, 1.0),  # a maximum below first wins
    (1.0, 60.0, 0, 1.0),  # n < 1 counts as 1
    (1.0, 60.0, -3, 1.0),
    (0.001, 3600.0, 21, 1048.576),  # past 2**16: the cap never stops short of maximum
    (0.001, 3600.0, 23, 3600.0),
]


@pytest.mark.parametrize(("first", "maximum", "n", "expected"), DELAYS)
def test_delay_table(first: float, maximum: float, n: int, expected: float) -> None:
    assert Backoff(first, maximum).delay(n) == pytest.approx(expected, rel=1e-12)


# the four formulas Backoff replaced, exactly as they were written
def _sms_process(n: int) -> float:
    return min(5.0, 0.2 * 2 ** min(n - 1, 16))


def _supervisor(n: int) -> float:
    backoff = 1.0
    for _ in range(n - 1):
        backoff = min(30.0, backoff * 2)
    return backoff


def _marketing(n: int, initial: float, maximum: float) -> float:
    return float(min(maximum, initial * 2 ** max(0, n - 1)))


def _login(n: int, base: float, maximum: float) -> float:
    return float(min(maximum, base * 2 ** min(n - 1, 30)))


def test_same_values_as_the_formulas_it_replaced() -> None:
    for n in range(1, 40):
        assert Backoff(0.2, 5.0).delay(n) == _sms_process(n)
        assert Backoff(1.0, 30.0).delay(n) == _supervisor(n)
        for initial, maximum in [(1.0, 60.0), (0.5, 7.0), (3.0, 3.0), (0.01, 900.0)]:
            assert Backoff(initial, maximum).delay(n) == _marketing(n, initial, maximum)
            assert Backoff(initial, maximum).delay(n) == _login(n, initial, maximum)


def test_first_must_be_positive() -> None:
    with pytest.raises(ValueError, match="first"):
        Backoff(0.0, 5.0)


def test_dsn_password() -> None:
    assert dsn_password("host=h user=u password=s3cret dbname=d") == "s3cret"
    assert dsn_password("postgresql://u:p%40ss@h/d") == "p@ss"
    assert dsn_password("host=h dbname=d") is None
    assert dsn_password("not a = valid = dsn '") is None


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_outage_is_logged_once_each_way_with_the_password_masked(
    migrated_db_url: URL,
) -> None:
    good = libpq_dsn(migrated_db_url)
    bad = psycopg.conninfo.make_conninfo(
        good, host="127.0.0.1", port=_unused_port(), password="s3cret pass"
    )
    outage = Outage("probe", dsn_password(bad), event_prefix="svc", backoff=Backoff(0.1, 0.4))

    async def attempt(dsn: str) -> float | None:
        try:
            conn = await psycopg.AsyncConnection.connect(dsn, connect_timeout=5)
        except psycopg.OperationalError as error:
            # libpq does not quote the password; prove the masking with a text that does
            return outage.failed(f"{error} (dsn: {bad})")
        await conn.execute("SELECT 1")
        await conn.close()
        outage.recovered()
        return None

    with capture_logs() as logs:
        delays = [await attempt(bad) for _ in range(4)]
        assert outage.down
        assert await attempt(good) is None
        assert await attempt(good) is None  # no outage going on: nothing logged
        again = await attempt(bad)  # a new outage starts over
    assert delays == [0.1, 0.2, 0.4, 0.4]
    assert again == 0.1
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("svc.db_lost", "warning"),
        ("svc.db_back", "info"),
        ("svc.db_lost", "warning"),
    ]
    assert logs[0]["loop"] == "probe" and logs[1]["attempts"] == 4
    assert "s3cret" not in repr(logs)
    assert MASK in logs[0]["error"]


def test_event_names_and_extra_fields() -> None:
    outage = Outage("writer", None, event_prefix="mta", lost="flush_failed", back="flush_ok")
    with capture_logs() as logs:
        outage.failed(psycopg.OperationalError(""), rows=3)
        outage.failed("again")
        outage.recovered()
    assert [e["event"] for e in logs] == ["mta.flush_failed", "mta.flush_ok"]
    assert logs[0]["rows"] == 3
    assert logs[0]["error"] == "OperationalError"  # an empty message names its type
