"""Settings files: every error class names the file, the line, the account and the field."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from smsmta import settings

ROOT = Path(__file__).resolve().parents[2]

VALID_ACCOUNT = """\
  - name: ops_sms
    operator: ops
    connection:
      server: 127.0.0.1
      port: 2775
      system_id: alpha
      password: s3cr3t
"""


def write(tmp_path: Path, body: str, name: str = "mid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def mid_file(tmp_path: Path, accounts: str = VALID_ACCOUNT) -> Path:
    return write(tmp_path, "kind: mid\naccounts:\n" + accounts)


def problems(path: Path) -> list[str]:
    with pytest.raises(settings.ConfigError) as caught:
        settings.load(path)
    return [str(issue) for issue in caught.value.issues]


def test_examples_load_with_every_section() -> None:
    mid = settings.load(ROOT / "config" / "mid.example.yaml")
    marketing = settings.load(ROOT / "config" / "marketing.example.yaml")
    assert isinstance(mid, settings.MidConfig)
    assert isinstance(marketing, settings.MarketingConfig)
    account = mid.accounts[0]
    assert account.name == "smsadmin_sms_marketing"
    assert account.throughput.max_mt_per_second == 100
    assert [rule.encoding for rule in account.smsc.encoding_mapping] == ["gsm7", "ucs2"]
    assert account.auto_replies[0].action is settings.ReplyAction.BLACKLIST


def test_defaults_are_the_specs(tmp_path: Path) -> None:
    account = settings.load(mid_file(tmp_path)).accounts[0]
    assert account.connection.mode is settings.Mode.TX_RX
    assert account.throughput.max_mt_per_second == 0  # unlimited
    assert account.smsc.mt_ack_id_format == "as_is"
    assert [(r.data_coding, r.encoding) for r in account.smsc.encoding_mapping] == [
        (0, "gsm7"),
        (8, "ucs2"),
    ]
    assert account.smsc.sr_id_in_text_field is False
    assert account.receiver_settings.system_id == "alpha"  # same as the transmitter


def test_wrong_type(tmp_path: Path) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT + "    throughput:\n      window: ten\n")
    assert problems(path) == [
        f"{path}:11: account 'ops_sms': throughput.window: "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_unknown_field(tmp_path: Path) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT + "    throughput:\n      windw: 10\n")
    assert problems(path) == [f"{path}:11: account 'ops_sms': throughput.windw: unknown field"]


@pytest.mark.parametrize(
    ("regex", "groups"), [(r"id:[0-9]+", 0), (r"(id):([0-9]+)", 2)], ids=["none", "two"]
)
def test_id_regex_needs_exactly_one_capture_group(tmp_path: Path, regex: str, groups: int) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT + f"    smsc:\n      sr_id_regex: '{regex}'\n")
    assert problems(path) == [
        f"{path}:11: account 'ops_sms': smsc.sr_id_regex: "
        f"SR id regex {regex!r} must have exactly one capture group, it has {groups}"
    ]


def test_name_must_follow_the_operator_convention(tmp_path: Path) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT.replace("name: ops_sms", "name: sms_ops"))
    assert problems(path) == [
        f"{path}:3: account 'sms_ops': name: a mid account's internal name must be "
        "<operator login>_<marketing account internal name>: expected 'ops_<marketing account>'"
    ]


def test_name_must_match_the_marketing_account_when_given(tmp_path: Path) -> None:
    body = VALID_ACCOUNT.replace("operator: ops", "operator: ops\n    marketing_account: sms2")
    path = mid_file(tmp_path, body)
    assert problems(path) == [
        f"{path}:3: account 'ops_sms': name: a mid account's internal name must be "
        "<operator login>_<marketing account internal name>: expected 'ops_sms2'"
    ]


def test_same_smpp_login_on_two_enabled_accounts(tmp_path: Path) -> None:
    second = VALID_ACCOUNT.replace("name: ops_sms", "name: ops_other")
    path = mid_file(tmp_path, VALID_ACCOUNT + second)
    assert problems(path) == [
        f"{path}:15: account 'ops_other': connection.system_id: SMPP login "
        "alpha@127.0.0.1:2775 is also used by enabled account 'ops_sms': "
        "receipts would land on the wrong account"
    ]
    disabled = second.replace("operator: ops\n", "operator: ops\n    enabled: false\n")
    assert len(settings.load(mid_file(tmp_path, VALID_ACCOUNT + disabled)).accounts) == 2


def test_window_below_one(tmp_path: Path) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT + "    throughput:\n      window: 0\n")
    assert problems(path) == [
        f"{path}:11: account 'ops_sms': throughput.window: "
        "Input should be greater than or equal to 1"
    ]


def test_negative_rate(tmp_path: Path) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT + "    throughput:\n      max_mt_per_second: -5\n")
    assert problems(path) == [
        f"{path}:11: account 'ops_sms': throughput.max_mt_per_second: "
        "Input should be greater than or equal to 0"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    body = VALID_ACCOUNT + "    throughput:\n      window: 0\n      max_mt_per_second: -1\n"
    assert len(problems(mid_file(tmp_path, body))) == 2


def test_unknown_encoding_and_kind(tmp_path: Path) -> None:
    body = (
        VALID_ACCOUNT
        + "    smsc:\n      encoding_mapping:\n        - {data_coding: 0, encoding: utf8}\n"
    )
    [problem] = problems(mid_file(tmp_path, body))
    assert problem.startswith(f"{tmp_path}/mid.yaml:12: account 'ops_sms': ")
    assert "smsc.encoding_mapping.0.encoding: Input should be 'gsm7'" in problem
    path = write(tmp_path, "kind: smtp\n", "bad.yaml")
    assert problems(path) == [f"{path}:1: kind: 'kind:' must be 'mid' or 'marketing'"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "kind: mid\naccounts:\n  - name: [unclosed\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:4: not valid YAML")


def test_password_from_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMPP_PW", "fromenv")
    account = settings.load(
        mid_file(tmp_path, VALID_ACCOUNT.replace("s3cr3t", "${SMPP_PW}"))
    ).accounts[0]
    assert account.connection.password is not None
    assert account.connection.password.get_secret_value() == "fromenv"
    assert "fromenv" not in repr(account)

    secret = tmp_path / "pw.secret"
    secret.write_text("fromfile\n")
    body = VALID_ACCOUNT.replace("s3cr3t", "{file: " + str(secret) + "}")
    account = settings.load(mid_file(tmp_path, body)).accounts[0]
    assert account.connection.password.get_secret_value() == "fromfile"


def test_missing_secret_is_named_and_never_echoed(tmp_path: Path) -> None:
    path = mid_file(tmp_path, VALID_ACCOUNT.replace("s3cr3t", "${SMSMTA_TEST_UNSET_VAR}"))
    assert problems(path) == [
        f"{path}:9: account 'ops_sms': connection.password: "
        "environment variable SMSMTA_TEST_UNSET_VAR is not set"
    ]
    # a password too long for SMPP is refused without being printed
    path = mid_file(tmp_path, VALID_ACCOUNT.replace("s3cr3t", "hunter2hunter2"))
    [problem] = problems(path)
    assert "hunter2" not in problem
    assert problem.endswith("connection.password: SMPP 3.4 passwords are at most 8 characters")


def test_encoding_names_match_the_text_library() -> None:
    text = pytest.importorskip("smsmta.smpp.text")
    assert set(settings.EncodingName.__args__) == set(text.ENCODING_NAMES)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smsmta.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_config_check_command(tmp_path: Path) -> None:
    ok = run_cli("config", "check", "config/mid.example.yaml", "config/marketing.example.yaml")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        "config/mid.example.yaml: mid account smsadmin_sms_marketing (enabled): tx_rx "
        "smsmta@127.0.0.1:2775, 2 connection(s) x 2 children, window 10, 100 MT/s",
        "config/marketing.example.yaml: marketing account sms_marketing (enabled): "
        "smsadmin @ http://127.0.0.1:8080",
    ]
    assert "secret" not in ok.stdout

    bad = mid_file(tmp_path, VALID_ACCOUNT + "    throughput:\n      window: 0\n")
    failed = run_cli("config", "check", "config/mid.example.yaml", str(bad))
    assert failed.returncode == 2
    assert failed.stderr.splitlines() == [
        f"{bad}:11: account 'ops_sms': throughput.window: "
        "Input should be greater than or equal to 1",
        "1 problem found",
    ]


def test_config_schema_command() -> None:
    result = run_cli("config", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    definitions = schema["$defs"]
    assert definitions["Throughput"]["properties"]["window"]["minimum"] == 1
    assert "sr_id_regex" in definitions["Smsc"]["properties"]
