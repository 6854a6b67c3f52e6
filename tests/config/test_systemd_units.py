"""The systemd units: one per service, notify-typed, restarted, hardened, and runnable."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from smsmta.cli import main

UNITS = Path(__file__).resolve().parents[2] / "config" / "systemd"
SERVICES = ["mid", "mta", "sms-process", "marketing"]


def read(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # keys are case-sensitive in systemd
    parser.read(UNITS / name)
    return parser


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_hardened_notify_unit(service: str) -> None:
    unit = read(f"smsmta-{service}.service")
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["Restart"] == "on-failure"
    assert int(svc["WatchdogSec"]) > 0
    assert svc["User"] == "smsmta"
    assert svc["KillMode"] == "mixed"  # the main process drains and stops its children
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert svc[key] == value, key
    assert "smsmta-db-upgrade.service" in unit["Unit"]["Requires"]
    program, command, *rest = svc["ExecStart"].split()
    assert program.endswith("/smsmta")
    assert command == service
    assert command in main.commands, f"'smsmta {command}' does not exist"
    assert rest[0] == "--config"


def test_migrations_run_once_before_the_services() -> None:
    unit = read("smsmta-db-upgrade.service")
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Service"]["RemainAfterExit"] == "yes"
    text = (UNITS / "smsmta-db-upgrade.service").read_text()
    assert "smsmta db upgrade --config /etc/smsmta/mid.yaml" in text
    assert "smsmta db upgrade --config /etc/smsmta/marketing.yaml" in text
