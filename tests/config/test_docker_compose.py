"""docker-compose.yml and the Dockerfile (no container engine runs here: read, not run)."""

from __future__ import annotations

import re
from pathlib import Path

from ruamel.yaml import YAML

from smsmta import settings
from smsmta.cli import main

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


def test_the_whole_stack_is_there() -> None:
    services = compose()["services"]
    assert set(services) == {
        "postgres", "migrate", "smsc-sim", "mid", "mta", "sms-process", "marketing",
        "prometheus", "grafana",
    }  # fmt: skip


def test_every_smsmta_service_builds_here_and_runs_a_real_command() -> None:
    services = compose()["services"]
    for name in ("migrate", "smsc-sim", "mid", "mta", "sms-process", "marketing"):
        service = services[name]
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        command = service["command"]
        if name == "migrate":
            assert "smsmta db upgrade" in command[0]
        else:
            assert command[0] in main.commands, f"{name}: 'smsmta {command[0]}' does not exist"


def test_start_order_and_ports() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("mid", "mta", "sms-process", "marketing"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}, name
    assert "smsc-sim" in services["mta"]["depends_on"]
    assert "mid" in services["marketing"]["depends_on"]
    ports = {name: [p.split(":")[0] for p in s.get("ports", [])] for name, s in services.items()}
    assert ports["mid"] == ["8080", "9100"]
    assert ports["mta"] == ["9101"] and ports["sms-process"] == ["9102"]
    assert ports["marketing"] == ["9104"] and ports["smsc-sim"][0] == "2775"
    assert ports["prometheus"] == ["9090"] and ports["grafana"] == ["3000"]


def test_the_settings_it_mounts_are_valid_and_point_at_the_compose_services(
    monkeypatch,
) -> None:
    monkeypatch.setenv("SMSMTA_DATABASE_URL", "postgresql://smsmta:smsmta@postgres:5432/smsmta")
    monkeypatch.setenv("SMSMTA_MID_PASSWORD", "x")
    mid = settings.load(ROOT / "config" / "docker" / "mid.yaml")
    marketing = settings.load(ROOT / "config" / "docker" / "marketing.yaml")
    assert isinstance(mid, settings.MidConfig)
    assert mid.accounts[0].connection.server == "smsc-sim"
    assert mid.mid.metrics_host == "0.0.0.0"  # reachable by prometheus from its container
    assert marketing.accounts[0].mid_url == "http://mid:8080"
    scrape = YAML(typ="safe").load((ROOT / "config/prometheus/prometheus.docker.yml").read_text())
    targets = {job["static_configs"][0]["targets"][0] for job in scrape["scrape_configs"]}
    assert targets == {"mid:9100", "mta:9101", "sms-process:9102", "marketing:9104"}


def test_the_dockerfile_installs_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.MULTILINE))
    assert copied == {"smpp", "smsmta", "mta", "sms_process", "midsourcing", "migrations"}
    assert 'ENTRYPOINT ["smsmta"]' in dockerfile
    assert "USER smsmta" in dockerfile
