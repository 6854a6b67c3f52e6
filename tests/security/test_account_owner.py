"""Two mid hosts on one database each change only the accounts they own.

Issue 14: every service syncs `mid.external_account` with its settings file at start,
and disabled every account its file did not list, so a second host whose file listed
fewer accounts disabled the first host's. `sync_accounts` now records the host that
wrote each account (`owner_host_id`, the file's `host_id`) and a host upserts, disables
and releases only its own; an account a host drops from its file is disabled and
released, and may then be taken by any host that lists it.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from sqlalchemy import URL

from smsmta.accounts import sync_accounts
from smsmta.db.engine import libpq_dsn
from smsmta.settings import MidConfig, load


def host_file(folder: Path, host: str, names: list[str], *, enabled: bool = True) -> MidConfig:
    accounts = "".join(
        f"""\
  - name: ops_{name}
    operator: ops
    enabled: {str(enabled).lower()}
    connection:
      mode: trx
      smsc_name: Sim
      server: 127.0.0.1
      port: {2775 + index}
      system_id: {host}_{name}
      password: secret
"""
        for index, name in enumerate(names)
    )
    path = folder / f"{host}.yaml"
    path.write_text(f"kind: mid\nhost_id: {host}\naccounts:\n{accounts}")
    config = load(path)
    assert isinstance(config, MidConfig)
    return config


async def table(conn: psycopg.AsyncConnection) -> dict[str, tuple[bool, str | None]]:
    cursor = await conn.execute(
        "SELECT internal_name, enabled, owner_host_id FROM mid.external_account"
    )
    return {name: (enabled, owner) for name, enabled, owner in await cursor.fetchall()}


async def test_a_host_with_fewer_accounts_leaves_the_other_hosts_accounts_alone(
    migrated_db_url: URL, tmp_path: Path
) -> None:
    host_a = host_file(tmp_path, "mid-a", ["sms", "promo", "alerts"])
    host_b = host_file(tmp_path, "mid-b", ["otp"])
    async with await psycopg.AsyncConnection.connect(
        libpq_dsn(migrated_db_url), autocommit=True
    ) as conn:
        ids_a = await sync_accounts(conn, host_a)
        ids_b = await sync_accounts(conn, host_b)
        assert set(ids_a) == {"ops_sms", "ops_promo", "ops_alerts"} and set(ids_b) == {"ops_otp"}
        assert await table(conn) == {
            "ops_sms": (True, "mid-a"),
            "ops_promo": (True, "mid-a"),
            "ops_alerts": (True, "mid-a"),
            "ops_otp": (True, "mid-b"),
        }
        # host B lists A's account disabled: A's row is not B's to change
        host_b_too = host_file(tmp_path, "mid-b", ["otp", "sms"], enabled=False)
        ids = await sync_accounts(conn, host_b_too)
        assert ids["ops_sms"] == ids_a["ops_sms"]
        assert (await table(conn))["ops_sms"] == (True, "mid-a")
        # host A drops one of its own: disabled and released; B's account untouched
        await sync_accounts(conn, host_file(tmp_path, "mid-a", ["sms", "promo"]))
        rows = await table(conn)
        assert rows["ops_alerts"] == (False, None)
        assert rows["ops_otp"] == (False, "mid-b")  # B's own file says enabled: false
        # a released account is taken by the next host that lists it
        await sync_accounts(conn, host_file(tmp_path, "mid-b", ["otp", "alerts"]))
        rows = await table(conn)
        assert rows["ops_alerts"] == (True, "mid-b") and rows["ops_otp"] == (True, "mid-b")
        assert rows["ops_sms"] == (True, "mid-a") and rows["ops_promo"] == (True, "mid-a")
