"""`smsmta account test`: the go-live check, against the simulator over real sockets.

The diagnosis functions are tested on their own; the runner (`run_check`) in-process
against a simulator in the test's loop; the command as a subprocess for its output and
exit codes, and with CliRunner for bad input (no SMSC needed).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from smsmta import golive
from smsmta.cli import main
from smsmta.golive import (
    FAIL,
    PASS,
    SKIP,
    FormatGuess,
    bind_advice,
    echo_differences,
    format_fixes,
    guess_id_formats,
    id_difference,
    ids_related,
    run_check,
    suggest_id_regex,
)
from smsmta.settings import Account
from smsmta.simulator import SimulatorConfig, Smsc
from smsmta.smpp.aio import BindError, BindSettings, connect
from smsmta.smpp.constants import CommandStatus
from smsmta.smpp.pdu import SubmitSm
from smsmta.smpp.receipt import IdFormat, ReceiptRules, interpret
from tests.sms_process.conftest import SmsHarness, sms, sms_config  # noqa: F401 (fixture)

TO = "+33612345678"
A, D, H, S = IdFormat.AS_IS, IdFormat.DECIMAL, IdFormat.HEX_NUMBER, IdFormat.HEX_STRING


# --- the pure diagnosis --------------------------------------------------------------------


def best(ack: str, sr: str, current: tuple[IdFormat, IdFormat] = (D, D)) -> tuple[str, str]:
    guesses = guess_id_formats(ack, sr, current)
    assert guesses, (ack, sr)
    return guesses[0].mt_ack_id_format.value, guesses[0].sr_id_format.value


def test_guess_hex_ids_on_both_sides() -> None:
    assert best("3E9", "3E9") == ("hex_number", "hex_number")
    guesses = guess_id_formats("3E9", "3E9", (D, D))
    assert FormatGuess(A, A, "3E9") in guesses  # fits too, but ranks after hex_number


def test_guess_hex_ack_and_decimal_receipt() -> None:
    assert best("3E9", "1001") == ("hex_number", "decimal")
    assert best("1001", "3e9") == ("decimal", "hex_number")


def test_guess_upper_and_lower_case_hex() -> None:
    assert best("abc1f", "ABC1F", (A, A)) == ("hex_number", "hex_number")


def test_guess_zero_padding() -> None:
    assert best("0001001", "1001", (A, A)) == ("decimal", "decimal")
    assert best("00003E9", "3e9", (A, A)) == ("hex_number", "hex_number")


def test_guess_hex_string() -> None:
    assert best("31303031", "1001", (A, A)) == ("hex_string", "decimal")


def test_guess_keeps_current_settings_when_they_fit_as_well() -> None:
    # "12" vs "12": decimal is the natural reading, whatever the current settings
    assert best("12", "12", (A, A)) == ("decimal", "decimal")
    assert format_fixes(FormatGuess(H, D, "x"), (D, D)) == ["set smsc.mt_ack_id_format: hex_number"]


def test_guess_nothing_for_unrelated_or_case_only_ids() -> None:
    assert guess_id_formats("order-17", "ORDER-17") == []
    assert guess_id_formats("1001", "2002") == []
    assert "letter case" in (id_difference("order-17", "ORDER-17") or "")
    assert "zero padding" in (id_difference("00x7", "x7") or "")
    assert id_difference("1001", "2002") is None
    assert ids_related("3E9", "1001") and ids_related("order-17", "ORDER-17")
    assert not ids_related("1001", "2002")


def test_echo_differences() -> None:
    assert echo_differences("café €5", "caf? ?5") == [(3, "é", "?"), (5, "€", "?")]
    assert echo_differences("a long text", "a long") == []  # only the echoed prefix counts


def test_bind_advice_names_the_field() -> None:
    settings = BindSettings(host="127.0.0.1", port=1, system_id="acme", name="x")
    cases = {
        CommandStatus.ESME_RINVPASWD: "connection.password",
        CommandStatus.ESME_RINVSYSID: "connection.system_id",
        CommandStatus.ESME_RBINDFAIL: "bind refused",
    }
    for status, field in cases.items():
        said, fixes = bind_advice(BindError(status), "connection", settings)
        assert status.name in said
        assert any(field in fix for fix in fixes), fixes
    said, fixes = bind_advice(BindError(CommandStatus.ESME_RINVPASWD), "receiver", settings)
    assert fixes[0].startswith("receiver.password")
    said, fixes = bind_advice(ConnectionRefusedError(), "connection", settings)
    assert fixes == ["connection.server", "connection.port"]
    said, fixes = bind_advice(TimeoutError(), "connection", settings)
    assert any("connection.tls" in fix for fix in fixes)


def test_bind_fail_names_system_id_and_password_first() -> None:
    # Many SMSCs answer ESME_RBINDFAIL to a wrong login, not only to too many binds.
    settings = BindSettings(host="127.0.0.1", port=1, system_id="acme", name="x")
    for prefix in ("connection", "receiver"):
        _, fixes = bind_advice(BindError(CommandStatus.ESME_RBINDFAIL), prefix, settings)
        assert fixes[0].startswith(f"{prefix}.system_id"), fixes
        assert f"{prefix}.password" in fixes[0]
        assert any("too many binds" in fix for fix in fixes[1:])


def test_whole_id_finds_a_cut_id_and_ids_under_10_are_alike() -> None:
    assert golive.whole_id("id:05e3299e-8d37-49d0 sub:001", "05e3299e") == "05e3299e-8d37-49d0"
    assert golive.whole_id("id:0123456789abcdef stat:X", "0123456789") == "0123456789abcdef"
    assert golive.whole_id("id:abc123, stat:DELIVRD", "abc123") is None
    assert golive.whole_id("id: 42. stat:DELIVRD", "42") is None
    assert all(golive.hex_or_decimal_alike(str(n)) for n in range(10))
    assert golive.hex_or_decimal_alike("007")
    assert not any(golive.hex_or_decimal_alike(i) for i in ("10", "A", "1f", ""))


def test_suggest_id_regex_for_an_id_longer_than_10() -> None:
    # 16 alphanumerics: the default regex takes none of it; the suggestion takes it whole
    text = b"id:0123456789abcdef sub:001 dlvrd:001 stat:DELIVRD err:000 Text:x"
    default = ReceiptRules.build("x")
    assert interpret(text, (), default).provider_id is None
    pattern = suggest_id_regex(text, ((0x001E, "0123456789abcdef"),), default, "0123456789abcdef")
    assert pattern == r"(?i)\bid:([0-9a-f]+)"
    fixed = ReceiptRules.build("x", id_regex=pattern)
    assert interpret(text, (), fixed).provider_id == "0123456789abcdef"


def test_suggest_id_regex_from_the_id_seen() -> None:
    rules = ReceiptRules.build("x", id_regex=r"msgid=(\d+)")
    text = b"id:0A1B2C sub:001 dlvrd:001 stat:DELIVRD err:000 Text:hello"
    pattern = suggest_id_regex(text, (), rules, "0A1B2C")
    assert pattern == r"(?i)\bid:([0-9a-f]+)"
    other = b"ref= 77001 status=DELIVRD"
    assert suggest_id_regex(other, (), rules, "77001") == r"(?i)\bref=\s*([0-9]+)"
    assert suggest_id_regex(other, (), rules, "99") is None


# --- the runner against the simulator ---------------------------------------------------------


def account(port: int, **sections: Any) -> Account:
    connection = {"server": "127.0.0.1", "port": port, "system_id": "smsmta"}
    connection["password"] = "secret"
    connection.update(sections.pop("connection", {}))
    data = {"name": "op_acme", "operator": "op", "connection": connection, **sections}
    return Account.model_validate(data)


async def advance_ids(port: int, count: int) -> None:
    """Submit `count` MTs without receipts so hex ids have letters (10 is 'A')."""
    settings = BindSettings(host="127.0.0.1", port=port, system_id="smsmta", password="secret")
    conn = await connect(settings, golive._Probe())
    for _ in range(count):
        conn.submit(SubmitSm(destination_addr="1", short_message=b"x"))
    await conn.drain(5)
    await conn.unbind()
    conn.close()


def by_name(report: golive.Report) -> dict[str, golive.Step]:
    return {step.name: step for step in report.steps}


async def test_default_settings_pass() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        report = await run_check(account(smsc.port), TO, wait=5)
    assert report.ok, [s.as_json() for s in report.steps if s.status != PASS]
    steps = by_name(report)
    assert list(steps) == [
        "settings",
        "bind transmitter",
        "bind receiver",
        "submit",
        "MT-ack id",
        "receipt",
        "SR id",
        "id match",
        "text id vs receipted_message_id",
        "stat",
        "encoding",
    ]
    assert steps["stat"].summary == "DELIVRD: delivered"
    assert "secret" not in json.dumps(report.as_json())


async def test_trx_mode_passes() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1, id_format="hex")) as smsc:
        acct = account(smsc.port, connection={"mode": "trx"})
        report = await run_check(acct, TO, wait=5)
    assert report.ok
    assert "bind transceiver" in by_name(report)


async def test_hex_ids_with_decimal_account_name_hex_number() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1, id_format="hex")) as smsc:
        await advance_ids(smsc.port, 10)
        formats = {"mt_ack_id_format": "decimal", "sr_id_format": "decimal"}
        report = await run_check(account(smsc.port, smsc=formats), TO, wait=5)
    assert not report.ok
    match = by_name(report)["id match"]
    assert match.status == FAIL
    assert match.fixes == [
        "set smsc.mt_ack_id_format: hex_number",
        "set smsc.sr_id_format: hex_number",
    ]
    assert by_name(report)["stat"].status == PASS


async def test_wrong_password_names_the_password() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        report = await run_check(account(smsc.port, connection={"password": "wrong"}), TO)
    steps = by_name(report)
    assert steps["bind transmitter"].status == FAIL
    assert "ESME_RINVPASWD" in steps["bind transmitter"].summary
    assert steps["bind transmitter"].fixes == [
        "check connection.password: the SMSC does not accept it"
    ]
    assert "submit" not in steps and not report.ok


async def test_receiver_section_is_named_for_the_receiver_bind() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        receiver = {"server": "127.0.0.1", "port": smsc.port, "system_id": "nobody"}
        report = await run_check(account(smsc.port, receiver=receiver), TO)
    steps = by_name(report)
    assert steps["bind transmitter"].status == PASS
    assert steps["bind receiver"].fixes[0].startswith("check receiver.system_id")


async def test_connection_refused_names_server_and_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    report = await run_check(account(port), TO)
    step = by_name(report)["bind transmitter"]
    assert step.status == FAIL
    assert step.fixes == ["check connection.server", "check connection.port"]


async def test_regex_that_finds_nothing_gets_a_suggestion() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        acct = account(smsc.port, smsc={"sr_id_regex": r"msgid=(\d+)"})
        report = await run_check(acct, TO, wait=5)
    step = by_name(report)["SR id"]
    assert step.status == FAIL and not report.ok
    assert step.fixes == [r"set smsc.sr_id_regex: '(?i)\bid:([0-9]+)'"]


async def test_ids_longer_than_10_name_sr_id_regex_with_a_working_suggestion() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1, id_format="uuid")) as smsc:
        report = await run_check(account(smsc.port), TO, wait=5)
    steps = by_name(report)
    step = steps["SR id"]
    assert step.status == FAIL and not report.ok
    assert "longer than" in step.summary or "cut" in step.summary, step.summary
    assert len(step.fixes) == 1 and step.fixes[0].startswith("set smsc.sr_id_regex: ")
    suggested = step.fixes[0].removeprefix("set smsc.sr_id_regex: ").strip("'")
    uuid = by_name(report)["MT-ack id"].summary.split("'")[1]
    receipt = f"id:{uuid} sub:001 dlvrd:001 stat:DELIVRD err:000 Text:x".encode()
    read = interpret(receipt, (), ReceiptRules.build("x", id_regex=suggested))
    assert read.provider_id == uuid  # the suggestion works, without the TLV
    async with Smsc(SimulatorConfig(port=0, seed=1, id_format="uuid")) as smsc:
        fixed = account(smsc.port, smsc={"sr_id_regex": suggested})
        report = await run_check(fixed, TO, wait=5)
    assert report.ok, [s.as_json() for s in report.steps if s.status != PASS]


async def test_text_and_tlv_id_disagreement_is_reported() -> None:
    # hex submit ids, decimal text ids, receipted_message_id in hex: the TLV decides, so
    # the id matches; the check still names the formats that make the text id agree.
    config = SimulatorConfig(port=0, seed=1, id_format="hex", receipt_text_id_decimal=True)
    async with Smsc(config) as smsc:
        await advance_ids(smsc.port, 10)
        await advance_ids(smsc.port, 2)
        report = await run_check(account(smsc.port), TO, wait=5)
        steps = by_name(report)
        assert steps["id match"].status == PASS
        step = steps["text id vs receipted_message_id"]
        assert step.status == FAIL and not report.ok
        assert step.fixes == [
            "set smsc.mt_ack_id_format: hex_number",
            "set smsc.sr_id_format: decimal",
        ]
        formats = {"mt_ack_id_format": "hex_number", "sr_id_format": "decimal"}
        report = await run_check(account(smsc.port, smsc=formats), TO, wait=5)
    assert report.ok, [s.as_json() for s in report.steps if s.status != PASS]
    assert by_name(report)["text id vs receipted_message_id"].status == PASS


async def test_no_receipt_within_the_wait() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1, dlr_delay_ms=5000)) as smsc:
        report = await run_check(account(smsc.port), TO, wait=1)
    step = by_name(report)["receipt"]
    assert step.status == FAIL and not report.ok
    assert "no receipt" in step.summary
    assert any("registered_delivery" in fix for fix in step.fixes)


async def test_mangled_characters_are_named() -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        report = await run_check(account(smsc.port), TO, text="prix: 5€ café", wait=5)
    step = by_name(report)["encoding"]
    assert step.status == FAIL
    assert "'€' came back as '?' (position 8)" in step.summary
    assert "'é' came back as '?' (position 13)" in step.summary
    assert any("smsc.encoding_mapping" in fix for fix in step.fixes)


async def test_failed_receipt_and_missing_echo() -> None:
    config = SimulatorConfig(port=0, seed=1, fail_rate=1.0)
    async with Smsc(config) as smsc:
        report = await run_check(account(smsc.port), TO, text="", wait=5)
    steps = by_name(report)
    assert steps["stat"].status == FAIL
    assert "not delivered" in steps["stat"].summary
    assert steps["encoding"].status == SKIP


# --- the command -------------------------------------------------------------------------------


def write_config(tmp_path: Path, port: int, **smsc: str) -> Path:
    acct = {
        "name": "op_acme",
        "operator": "op",
        "connection": {"server": "127.0.0.1", "port": port, "system_id": "smsmta"},
        "smsc": smsc,
    }
    acct["connection"]["password"] = "secret"
    path = tmp_path / "mid.yaml"
    path.write_text(json.dumps({"kind": "mid", "accounts": [acct]}))
    return path


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smsmta.cli",
        "account",
        "test",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_command_passes_and_fails_with_hex_ids(tmp_path: Path) -> None:
    async with Smsc(SimulatorConfig(port=0, seed=1, id_format="hex")) as smsc:
        await advance_ids(smsc.port, 10)
        good = write_config(tmp_path, smsc.port)
        code, out, _ = await run_cli("--config", str(good), "op_acme", "--to", TO, "--wait", "5")
        assert code == 0, out
        assert "every step passed" in out
        decimal = write_config(
            tmp_path, smsc.port, mt_ack_id_format="decimal", sr_id_format="decimal"
        )
        code, out, _ = await run_cli("--config", str(decimal), "op_acme", "--to", TO, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    match = next(step for step in report["steps"] if step["name"] == "id match")
    assert "set smsc.mt_ack_id_format: hex_number" in match["fixes"]
    assert "secret" not in out


def test_bad_input_exits_2(tmp_path: Path) -> None:
    path = write_config(tmp_path, 2775)
    runner = CliRunner()
    unknown = runner.invoke(main, ["account", "test", "--config", str(path), "nope", "--to", TO])
    assert unknown.exit_code == 2
    assert "no mid account 'nope'" in unknown.output
    bad = tmp_path / "bad.yaml"
    bad.write_text('{"kind": "mid", "accounts": [{"name": "x"}]}')
    invalid = runner.invoke(main, ["account", "test", "--config", str(bad), "x", "--to", TO])
    assert invalid.exit_code == 2
    no_number = runner.invoke(
        main, ["account", "test", "--config", str(path), "op_acme", "--to", "bob"]
    )
    assert no_number.exit_code == 2


@pytest.mark.parametrize("argv", [["account", "test", "--help"]])
def test_help(argv: list[str]) -> None:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0 and "--to" in result.output


# --- a live account: the SMS process is running ----------------------------------------------


async def test_live_account_receipt_found_where_the_sms_process_stored_it(
    sms: SmsHarness,  # noqa: F811 (the fixture imported above)
) -> None:
    # The SMS process binds its receiver first, so the simulator's round-robin hands the
    # test's receipt to it, not to the check's receiver: the check reads it from mid.inbox.
    async with Smsc(SimulatorConfig(port=0, seed=1)) as smsc:
        await advance_ids(smsc.port, 10)  # ids past 9: one test MT is enough
        path, config = sms.write_config(sms_config(smsc.port))
        service = await sms.start_sms_process(path)

        async def receiver_bound() -> bool:
            return smsc.stats["binds_active"]["rx"] >= 1

        await sms.until(receiver_bound, 20, "the SMS process's receiver bind", service)
        report = await run_check(config.accounts[0], TO, wait=10, database_dsn=sms.dsn)
        await service.stop()
    steps = by_name(report)
    assert report.ok, [s.as_json() for s in report.steps if s.status != PASS]
    assert "running SMS process" in steps["receipt"].summary
    assert dict(steps["receipt"].details)["found in"].startswith("mid.inbox")
    assert steps["id match"].status == PASS


async def test_ids_under_10_get_more_test_mts_until_hex_and_decimal_differ() -> None:
    # A fresh counter: ids 1..9 read the same in decimal and hex, so a first MT could not
    # show that this provider writes hex MT-ack ids and decimal text ids. The check sends
    # test MTs until an id tells them apart ("A"), then names the formats.
    config = SimulatorConfig(port=0, seed=1, id_format="hex", receipt_text_id_decimal=True)
    async with Smsc(config) as smsc:
        report = await run_check(account(smsc.port), TO, wait=5)
        submitted = smsc.stats["submit_sm"]
    steps = by_name(report)
    assert steps["MT-ack id"].summary == "provider_msg_id 'A'"
    assert dict(steps["submit"].details)["test MTs"].startswith("10:")
    assert submitted == 10
    step = steps["text id vs receipted_message_id"]
    assert step.status == FAIL and not report.ok
    assert step.fixes == ["set smsc.mt_ack_id_format: hex_number", "set smsc.sr_id_format: decimal"]
