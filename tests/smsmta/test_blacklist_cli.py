"""`smsmta blacklist add|remove|list`: numbers in any written form, stored canonical."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import URL

from smsmta.cli import main


def test_blacklist_commands_normalise_their_numbers(migrated_db_url: URL) -> None:
    url = migrated_db_url.render_as_string(hide_password=False)
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["blacklist", *args, "--url", url])
        return result.exit_code, result.output

    code, out = run("add", "+38000", "06 12 34 56 78", "33612345679", "--country", "FR")
    assert code == 0, out
    assert "38000: 2 added, 0 already there" in out
    code, out = run("add", "38000", "+33612345678")  # the same handset, written otherwise
    assert code == 0 and out.strip() == "38000: 0 added, 1 already there"
    code, out = run("list", "--number", "0033612345678")
    assert code == 0 and "+33612345678" in out and "1 entry" in out
    code, out = run("add", "38000", "+33612345670", "0612")  # one bad: nothing done
    assert code == 1 and "'0612'" in out and "default_country" in out
    code, out = run("list", "--short-code", "38000")
    assert code == 0 and "2 entries" in out and "+33612345670" not in out
    code, out = run("remove", "38000", "0612345679", "--country", "fr")
    assert code == 0 and "38000: 1 removed" in out, out
    code, out = run("list", "--country", "FRA")
    assert code == 2 and "ISO 3166" in out
