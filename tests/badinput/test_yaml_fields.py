"""Every field of both settings files, given an invalid value, gets its own error.

The walk follows the settings JSON Schema (`smsmta config schema`, smsmta.settings
.json_schema()): for EVERY property of every section, account, receiver, encoding rule,
auto-reply, marketing account and template, it writes a YAML file (its own emitter, so
that the test knows each key's line) where that one property holds a value of the wrong
type, and, where the schema states a bound, length, pattern or choice, one just outside
it. Account-level values go into the second account. `load()` must raise ConfigError
whose issues all name the file, the key's line, the account (for account fields) and the
dotted field, with a message, never a traceback; no issue blames another field or the
other, valid account. A few of the files go through `smsmta config check` too: exit 2,
the same `file:line: account 'x': field: message` lines.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from smsmta.cli import main
from smsmta.settings import ConfigError, json_schema, load

SCHEMA = json_schema()
DEFS = SCHEMA["$defs"]

ACCOUNT = {
    "name": "ops_a",
    "operator": "ops",
    "marketing_account": "a",
    "label": "A",
    "enabled": True,
    "connection": {
        "mode": "tx_rx", "smsc_name": "Sim", "server": "127.0.0.1", "port": 2775,
        "system_id": "a", "password": "secret", "system_type": "", "connections": 1,
        "tls": False, "tls_ca_file": "/etc/ssl/ca.pem", "verbose_trace": False,
    },
    "receiver": {
        "server": "127.0.0.1", "port": 2776, "system_id": "ra", "password": "secret",
        "system_type": "",
    },
    "channel": {
        "transliteration": True, "store_mo": True, "realtime_kpi": True,
        "source_number": "+33600000000", "short_code": "38000", "source_ton": 1,
        "source_npi": 1, "dest_ton": 1, "dest_npi": 1, "alphanumeric_ton": 5,
        "alphanumeric_npi": 0, "service_type": "",
    },
    "throughput": {
        "window": 10, "max_mt_per_second": 100, "max_binds": 0, "reconnect_delay": 10,
        "mt_timeout": 30, "bind_timeout": 30, "enquire_link_period": 30,
    },
    "smsc": {
        "encoding_mapping": [
            {"data_coding": 0, "encoding": "gsm7"}, {"data_coding": 8, "encoding": "ucs2"},
        ],
        "message_payload": False, "send_full_phone_number": False,
        "skip_tls_verification": False, "bind_ton": 0, "bind_npi": 0, "address_range": "",
        "sr_id_regex": "id:([0-9A-Za-z]{1,10})", "sr_success_regex": "^DELIV",
        "sr_error_regex": "^UNDELIV", "mt_ack_id_format": "as_is", "sr_id_format": "as_is",
        "sr_id_in_optional_fields": False, "sr_id_in_text_field": False,
        "service_id_tlv_tag": 5200,
    },
    "auto_replies": [
        {"keyword": "STOP", "short_code": "", "reply": "Bye", "action": "blacklist"},
        {"keyword": "", "short_code": "38000", "reply": "Hi", "action": "none"},
    ],
}  # fmt: skip


def mid_document() -> dict[str, Any]:
    second = copy.deepcopy(ACCOUNT)
    second.update(name="ops_b", marketing_account="b", label="B")
    second["connection"]["system_id"] = "b"
    second["receiver"]["system_id"] = "rb"
    return {
        "kind": "mid",
        "host_id": "mid-1",
        "database": {"url": "postgresql://u@localhost/db", "embedded_dir": "/tmp/x"},
        "logging": {"level": "info", "format": "json"},
        "mid": {"port": 8080, "tls_certfile": "/c.pem", "tls_keyfile": "/k.pem"},
        "mta": {"children": 2},
        "sms_process": {"batch_size": 10},
        "accounts": [copy.deepcopy(ACCOUNT), second],
    }


def marketing_document() -> dict[str, Any]:
    account = {
        "name": "a", "label": "A", "enabled": True, "mid_url": "https://mid", "operator": "ops",
        "password": "pw", "verify_tls": True, "ca_file": "/ca.pem", "timeout": 30,
    }  # fmt: skip
    template = {
        "name": "t", "label": "T", "account": "a", "source_addr": "Brand", "max_parts": 5,
        "transmission_mode": "normal", "validity": 3600, "priority": 0, "service_type": "CMT",
        "service_id": "x",
    }  # fmt: skip
    return {
        "kind": "marketing",
        "database": {"url": "postgresql://u@localhost/db"},
        "logging": {"level": "info"},
        "marketing": {"pull_interval": 10},
        "accounts": [account, {**account, "name": "b"}],
        "templates": [template, {**template, "name": "u", "account": "b"}],
    }


def emit(document: dict[str, Any]) -> tuple[str, dict[tuple[Any, ...], int]]:
    """Block YAML with JSON scalars, and the line of every key and list item."""
    out: list[str] = []
    lines: dict[tuple[Any, ...], int] = {}

    def mapping(node: dict[str, Any], indent: int, path: tuple[Any, ...], first: str) -> None:
        for n, (key, value) in enumerate(node.items()):
            prefix = first if n == 0 else " " * indent
            here = (*path, key)
            lines[here] = len(out) + 1
            if isinstance(value, dict) and value:
                out.append(f"{prefix}{key}:")
                mapping(value, indent + 2, here, " " * (indent + 2))
            elif isinstance(value, list) and value and all(isinstance(i, dict) for i in value):
                out.append(f"{prefix}{key}:")
                for index, item in enumerate(value):
                    lines[(*here, index)] = len(out) + 1
                    mapping(item, indent + 4, (*here, index), " " * (indent + 2) + "- ")
            else:
                out.append(f"{prefix}{key}: {json.dumps(value)}")

    mapping(document, 0, (), "")
    return "\n".join(out) + "\n", lines


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return DEFS[schema["$ref"].rsplit("/", 1)[-1]]
    for branch in schema.get("anyOf", ()):
        if branch.get("type") != "null":
            return {**resolve(branch), **{k: v for k, v in schema.items() if k != "anyOf"}}
    if "allOf" in schema:
        return resolve(schema["allOf"][0])
    return schema


def invalid_values(schema: dict[str, Any]) -> list[tuple[str, Any]]:
    """(what, value) pairs the schema forbids: a wrong type, then each bound overstepped."""
    schema = resolve(schema)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return [("a number for a section", 42)]
    if kind == "array":
        return [("a number for a list", 42)]
    values: list[tuple[str, Any]] = [("a list for a scalar", [[1]])]
    if kind == "boolean":
        values.append(("not a boolean", "maybe"))
    if "enum" in schema or "const" in schema:
        values.append(("not a choice", "no_such_choice"))
    if "minimum" in schema:
        values.append(("under the minimum", schema["minimum"] - 1))
    if "exclusiveMinimum" in schema:
        values.append(("at the exclusive minimum", schema["exclusiveMinimum"]))
    if "maximum" in schema:
        values.append(("over the maximum", schema["maximum"] + 1))
    if schema.get("maxLength") is not None:
        values.append(("too long", "x" * (schema["maxLength"] + 1)))
    if schema.get("minLength"):
        values.append(("too short", ""))
    if "pattern" in schema:
        values.append(("against the pattern", "\u2603 no"))
    return values


def walk(model: str, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    found = []
    for name, prop in DEFS[model]["properties"].items():
        here = (*path, name)
        found.append((here, prop))
        target = resolve(prop)
        if "properties" in target:
            found += walk(prop_ref(prop), here)
        elif target.get("type") == "array" and "$ref" in target.get("items", {}):
            found += walk(target["items"]["$ref"].rsplit("/", 1)[-1], (*here, 1))
    return found


def prop_ref(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    return next(prop_ref(b) for b in prop["anyOf"] if b.get("type") != "null")


def set_at(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = document
    for key in path[:-1]:
        if isinstance(node, dict) and node.get(key) is None:
            node[key] = {}
        node = node[key]
    node[path[-1]] = value


CASES = [
    (kind, path, what, value)
    for kind in ("mid", "marketing")
    for path, prop in walk("MidConfig" if kind == "mid" else "MarketingConfig", ())
    if path != ("kind",) or kind == "mid"
    for what, value in invalid_values(prop)
]
EMPTY_NAMES = [case for case in CASES if case[1][::2] == ("accounts", "name") and case[3] == ""]


def test_the_walk_covers_every_field_of_both_files() -> None:
    paths = {(kind, path) for kind, path, _w, _v in CASES}
    assert len(paths) >= 110, len(paths)
    for field in ("password", "sr_id_regex", "service_id_tlv_tag", "encoding", "action"):
        assert any(path[-1] == field for _k, path in paths), field
    assert ("marketing", ("templates", 1, "max_parts")) in paths
    assert len(EMPTY_NAMES) == 2


def problems_of(folder: Path, kind: str, path: tuple[Any, ...], what: str, value: Any) -> list[str]:
    """What is wrong with the errors for one invalid value (nothing: an empty list)."""
    document = mid_document() if kind == "mid" else marketing_document()
    set_at(document, path, value)
    text, lines = emit(document)
    file = folder / f"{kind}.yaml"
    file.write_text(text)
    case = f"{kind} {'.'.join(map(str, path))} = {value!r:.30} ({what})"
    try:
        load(file)
    except ConfigError as exc:
        issues = exc.issues
    else:
        return [f"{case}: loaded without error"]
    if not issues:
        return [f"{case}: no issue"]
    in_account = path[0] == "accounts" and len(path) > 2
    expected = ".".join(str(p) for p in (path[2:] if in_account else path))
    wrong = []
    for issue in issues:
        shown = f"{case}: {issue}"
        if issue.file != str(file) or not issue.message or "Traceback" in issue.message:
            wrong.append(shown)
        elif path == ("kind",):
            if issue.field != "kind" or issue.line != lines[path]:
                wrong.append(shown)
        elif issue.field != expected and not issue.field.startswith(expected + "."):
            wrong.append(f"{shown} (expected the field {expected})")
        elif issue.field == expected and issue.line != lines[path]:
            wrong.append(f"{shown} (expected line {lines[path]})")
        elif issue.line is None or issue.line < lines[path]:
            wrong.append(f"{shown} (expected line >= {lines[path]})")
        elif in_account and path[2:] != ("name",):
            if issue.account != document["accounts"][1]["name"]:
                wrong.append(f"{shown} (expected the account)")
        elif in_account and not issue.account:
            wrong.append(f"{shown} (the account is not identified)")
        elif not in_account and (
            issue.account is not None
            or not str(issue).startswith(f"{file}:{issue.line}: {issue.field}: ")
        ):
            wrong.append(f"{shown} (not file:line: field: message)")
    return wrong


@pytest.mark.timeout(60)
def test_every_invalid_field_is_named_with_its_file_line_and_account(tmp_path: Path) -> None:
    wrong: list[str] = []
    for kind, path, what, value in CASES:
        if (kind, path, what, value) not in EMPTY_NAMES:
            wrong += problems_of(tmp_path, kind, path, what, value)
    assert wrong == [], "\n".join(wrong)


@pytest.mark.parametrize(("kind", "path", "what", "value"), EMPTY_NAMES)
def test_an_account_with_an_empty_name_is_identified_by_its_position(
    tmp_path: Path, kind: str, path: tuple[Any, ...], what: str, value: Any
) -> None:
    assert problems_of(tmp_path, kind, path, what, value) == []


@pytest.mark.parametrize(
    ("path", "value", "said"),
    [
        (("accounts", 1, "connection", "password"), "longer than eight", "at most 8 characters"),
        (("accounts", 1, "connection", "password"), {"file": "/nonexistent/pw"}, "cannot read"),
        (("accounts", 1, "smsc", "sr_id_regex"), "id:(a)(b)", "capture group"),
        (("accounts", 1, "throughput", "window"), "ten", "valid integer"),
        (("mid", "port"), 70000, "less than or equal to 65535"),
        # Adobe's "send through a dedicated process": not a setting here, and said why
        (("accounts", 1, "dedicated_process"), True, "unknown field: smsmta always sends"),
    ],
)
def test_config_check_prints_each_problem_on_one_line_and_exits_2(
    tmp_path: Path, path: tuple[Any, ...], value: Any, said: str
) -> None:
    document = mid_document()
    set_at(document, path, value)
    text, lines = emit(document)
    file = tmp_path / "mid.yaml"
    file.write_text(text)
    good = tmp_path / "marketing.yaml"
    good.write_text(emit(marketing_document())[0])
    result = CliRunner().invoke(main, ["config", "check", str(good), str(file)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is not None
    problems = [line for line in result.stderr.splitlines() if line.startswith(str(file))]
    assert len(problems) == 1, result.stderr
    where = ".".join(str(p) for p in (path[2:] if path[0] == "accounts" else path))
    prefix = f"{file}:{lines[path]}: " + ("account 'ops_b': " if path[0] == "accounts" else "")
    assert problems[0].startswith(f"{prefix}{where}: "), problems[0]
    assert said in problems[0], problems[0]
    assert "longer than eight" not in result.output  # a refused password is never echoed
    assert str(good) not in result.stderr  # the valid file is not blamed
