"""`smsmta message-log list|set` and `smsmta receipts unmatched` against a real database."""

from __future__ import annotations

import psycopg
from click.testing import CliRunner
from sqlalchemy import URL

from smsmta.cli import main
from smsmta.db.engine import libpq_dsn


def test_message_log_list_and_set(migrated_db_url: URL) -> None:
    with psycopg.connect(libpq_dsn(migrated_db_url), autocommit=True) as conn:
        (entry_id,) = conn.execute(
            "INSERT INTO mid.broad_log_msg (key, first_text, count) VALUES "
            "('SR Sim EXPIRED 003|#MESSAGE#', 'SR Sim EXPIRED 003|MESSAGE=id:1 ...', 7) "
            "RETURNING id"
        ).fetchone()
    url = migrated_db_url.render_as_string(hide_password=False)
    runner = CliRunner()
    listed = runner.invoke(main, ["message-log", "list", "--url", url])
    assert listed.exit_code == 0, listed.output
    assert "SR Sim EXPIRED 003|#MESSAGE#" in listed.output and "hard" in listed.output

    changed = runner.invoke(main, ["message-log", "set", "soft", str(entry_id), "--url", url])
    assert changed.exit_code == 0, changed.output
    assert changed.output.strip() == f"{entry_id}: soft: SR Sim EXPIRED 003|#MESSAGE#"
    soft = runner.invoke(main, ["message-log", "list", "--type", "soft", "--url", url])
    assert "EXPIRED" in soft.output

    missing = runner.invoke(main, ["message-log", "set", "hard", "999999", "--url", url])
    assert missing.exit_code == 1
    bad = runner.invoke(main, ["message-log", "set", "maybe", str(entry_id), "--url", url])
    assert bad.exit_code == 2


def test_receipts_unmatched_when_there_are_none(migrated_db_url: URL) -> None:
    url = migrated_db_url.render_as_string(hide_password=False)
    result = CliRunner().invoke(main, ["receipts", "unmatched", "--url", url])
    assert result.exit_code == 0, result.output
    assert "0 unmatched receipt(s)" in result.output
