"""Settings documents for a stack on one machine, as the demo, benchmarks and tests write them.

`mid_document()` and `simulator_account()` build the mid YAML (written as JSON, which YAML
reads) for services talking to the SMSC simulator on 127.0.0.1, `mid_api_accounts()` the
two accounts of a mid API under test, `marketing_document()` the marketing service's;
`write_document()` writes one, readable by its owner only when it holds a password. Pure
but for `write_document`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIMULATOR_SYSTEM_ID = "smsmta"
SIMULATOR_PASSWORD = "secret"


def simulator_account(
    name: str,
    operator: str,
    port: int,
    *,
    connections: int | None = 2,
    mode: str | None = "tx_rx",
    smsc_name: str = "Sim",
    system_id: str = SIMULATOR_SYSTEM_ID,
    throughput: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """An account bound to the simulator on 127.0.0.1:`port`; `fields` adds label, channel..."""
    connection: dict[str, Any] = {} if mode is None else {"mode": mode}
    connection |= {
        "smsc_name": smsc_name,
        "server": "127.0.0.1",
        "port": port,
        "system_id": system_id,
        "password": SIMULATOR_PASSWORD,
    }
    if connections is not None:
        connection["connections"] = connections
    account = {"name": name, "operator": operator, **fields, "connection": connection}
    if throughput is not None:
        account["throughput"] = throughput
    return account


def mid_api_accounts(smpp_port: int = 2775) -> list[dict[str, Any]]:
    """The accounts of a mid API under test (tests/midsourcing, bench/attack.py), of operator
    ops: `ops_sms` (enabled, transliteration on, source number +33600000000) and `ops_off`
    (disabled, another login)."""
    return [
        simulator_account(
            name,
            "ops",
            smpp_port,
            connections=None,
            mode=None,
            system_id=system_id,
            label=name,
            enabled=enabled,
            channel={"transliteration": True, "source_number": "+33600000000"},
        )
        for name, enabled, system_id in (("ops_sms", True, "smsmta"), ("ops_off", False, "other"))
    ]


def mid_document(
    accounts: list[dict[str, Any]],
    *,
    host_id: str | None = "bench",
    level: str = "warning",
    **sections: Any,
) -> dict[str, Any]:
    """A `kind: mid` document: JSON logs at `level`, the `sections` (mid, mta, sms_process)."""
    document: dict[str, Any] = {"kind": "mid"}
    if host_id is not None:
        document["host_id"] = host_id
    document["logging"] = {"level": level, "format": "json"}
    return {**document, **sections, "accounts": accounts}


def marketing_document(
    mid_port: int,
    operator: str,
    password: str,
    template: dict[str, Any],
    *,
    level: str = "warning",
    timeout: float | None = None,
    **marketing: Any,
) -> dict[str, Any]:
    """A `kind: marketing` document: one account "sms" on the mid server at 127.0.0.1:`mid_port`
    as `operator`, one `template` on it, the `marketing` section."""
    account: dict[str, Any] = {
        "name": "sms",
        "mid_url": f"http://127.0.0.1:{mid_port}",
        "operator": operator,
        "password": password,
    }
    if timeout is not None:
        account["timeout"] = timeout
    return {
        "kind": "marketing",
        "logging": {"level": level, "format": "json"},
        "marketing": marketing,
        "accounts": [account],
        "templates": [{**template, "account": "sms"}],
    }


def write_document(path: Path, document: dict[str, Any], *, private: bool = False) -> Path:
    """`document` as JSON at `path`; mode 0600 when `private` (it holds a password)."""
    path.write_text(json.dumps(document, indent=2))
    if private:
        path.chmod(0o600)
    return path
