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
    ports = {name: [p.split(":")[1] for p in s.get("ports", [])] for name, s in services.items()}
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


def test_every_published_port_is_bound_to_the_loopback() -> None:
    """Issue 14: compose published every port on all interfaces, the simulator's control
    port (which injects MOs and receipts) among them. Each is `127.0.0.1:host:container`:
    reachable from this machine (and from the other containers by service name), not
    from the network; put a TLS reverse proxy in front to open the mid API."""
    services = compose()["services"]
    published = [(name, port) for name, s in services.items() for port in s.get("ports", [])]
    assert published, "no published port at all?"
    for name, port in published:
        assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)
        assert len(port.split(":")) == 3, (name, port)
    control = [port for port in services["smsc-sim"]["ports"] if port.endswith(":8081")]
    assert control == ["127.0.0.1:8081:8081"]


def test_the_operator_password_has_no_default_and_must_be_given() -> None:
    """The mid operator's password came from `${SMSMTA_MID_PASSWORD:-change-me}`: the
    stack ran with a password everyone knows. It is now `${SMSMTA_MID_PASSWORD:?...}`:
    `docker compose up` refuses to start until it is set (no engine runs here, so the
    test reads the interpolation; compose's `:?` is documented to fail when unset or empty)."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text
    for path in (ROOT / "config" / "docker").glob("*"):
        assert "change-me" not in path.read_text(), path
    password = compose()["x-smsmta"]["environment"]["SMSMTA_MID_PASSWORD"]
    assert re.fullmatch(r"\$\{SMSMTA_MID_PASSWORD:\?[^}]+\}", password), password
    # every secret compose interpolates is required, none has a default
    for variable, operator in re.findall(r"\$\{(\w*(?:PASSWORD|SECRET)\w*)(:?[-?+]?)", text):
        assert operator == ":?", (variable, operator)
