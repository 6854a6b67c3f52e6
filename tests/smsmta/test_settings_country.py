"""The accounts' `default_country`: an ISO 3166 alpha-2 code, checked at load, naming the
field; the From of a template at most 20 characters."""

from __future__ import annotations

from pathlib import Path

from smsmta import settings
from tests.smsmta.test_settings import VALID_ACCOUNT, mid_file, problems, write


def test_default_country_is_checked_at_load_naming_the_field(tmp_path: Path) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT + "    default_country: FRA\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:10: account 'ops_sms': default_country: ")
    assert "'FRA' is not an ISO 3166 alpha-2 country code" in problem
    account = settings.load(mid_file(tmp_path, VALID_ACCOUNT + "    default_country: fr\n"))
    assert isinstance(account, settings.MidConfig)
    assert account.accounts[0].default_country == "FR"
    assert settings.load(mid_file(tmp_path)).accounts[0].default_country == ""  # type: ignore[union-attr]


def test_marketing_country_and_template_from(tmp_path: Path) -> None:
    body = """\
        kind: marketing
        accounts:
          - name: sms
            mid_url: http://127.0.0.1:1
            operator: ops
            default_country: {country}
        templates:
          - name: promo
            account: sms
            source_addr: "{source}"
        """
    ok = write(tmp_path, body.format(country="GB", source="3" * 20), "m.yaml")
    loaded = settings.load(ok)
    assert isinstance(loaded, settings.MarketingConfig)
    assert loaded.accounts[0].default_country == "GB"
    bad = write(tmp_path, body.format(country="UK", source="3" * 21), "bad.yaml")
    found = problems(bad)
    assert any("default_country" in p and "'UK'" in p for p in found), found
    assert any("source_addr" in p and "at most 20 characters" in p for p in found), found
