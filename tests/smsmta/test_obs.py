"""Logging is JSON lines without secrets; metrics are served on the configured port."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

from prometheus_client import CollectorRegistry, Counter

from smsmta.obs import serve_metrics

SCRIPT = textwrap.dedent(
    """
    import structlog
    from smsmta.obs import configure_logging
    configure_logging("mta", level="info")
    log = structlog.get_logger()
    log.info("bind", system_id="alpha", password="hunter22", nested={"token": "t0k3n", "n": 1})
    log.debug("hidden")
    log.warning("settings", account={"connection": {"password": "hunter22", "port": 2775}})
    import logging
    logging.getLogger("asyncio").error("Exception in callback %s", "x", exc_info=ValueError("boom"))
    """
)


def test_log_lines_are_json_and_never_carry_a_password() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "hunter22" not in result.stderr
    assert "t0k3n" not in result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    assert [event["event"] for event in events] == [
        "bind",
        "settings",
        "Exception in callback x",  # the standard library's records too
    ]  # debug filtered out
    assert events[2]["logger"] == "asyncio" and events[2]["service"] == "mta"
    assert "ValueError: boom" in events[2]["exception"]
    bind = events[0]
    assert bind["service"] == "mta"
    assert bind["level"] == "info"
    assert bind["system_id"] == "alpha"
    assert bind["password"] == "**********"
    assert bind["nested"] == {"token": "**********", "n": 1}
    assert bind["timestamp"].endswith("Z")
    assert events[1]["account"]["connection"] == {"password": "**********", "port": 2775}


def test_metrics_are_served_on_the_configured_port() -> None:
    registry = CollectorRegistry()
    counter = Counter("smsmta_test_events", "events seen by the test", registry=registry)
    counter.inc(3)
    port = serve_metrics("127.0.0.1", 0, registry)
    assert port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "smsmta_test_events_total 3.0" in body
    assert serve_metrics("127.0.0.1", None, registry) is None
