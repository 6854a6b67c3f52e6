"""Keep `mid.external_account` in step with the accounts of the mid settings file.

Every mid-side service calls `sync_accounts()` at start: each account of the YAML is
upserted by internal name with a snapshot of its settings (secrets masked), and the
returned mapping gives the ids that queue rows and provider ids refer to.

Several mid hosts may share one database, each with its own file (`host_id`). A row
records the host that wrote it (`owner_host_id`), and a host changes only its own rows
or rows nobody owns (which it then takes): an account another host owns keeps that
host's settings and enabled flag, and its id is still returned. Accounts that left the
file are disabled and released (owner NULL), never deleted: their messages and receipts
stay, and any host that lists the account later takes it. Rows written before owners
were recorded (migration mid_0010) have none: the first host that lists one takes it, and
one that no file lists is left as it is (no host may say it is no longer wanted).
Each host needs its own `host_id`: two hosts with the same one are one owner.
Touches: the database.
"""

from __future__ import annotations

import json

import psycopg
import structlog

from smsmta.settings import MidConfig

log = structlog.get_logger("smsmta.accounts")

UPSERT = """
INSERT INTO mid.external_account (internal_name, operator_login, marketing_account, enabled,
                                  settings, owner_host_id)
VALUES (%(name)s, %(operator)s, %(marketing)s, %(enabled)s, %(settings)s::jsonb, %(host)s)
ON CONFLICT (internal_name) DO UPDATE
SET operator_login = EXCLUDED.operator_login, marketing_account = EXCLUDED.marketing_account,
    enabled = EXCLUDED.enabled, settings = EXCLUDED.settings,
    owner_host_id = EXCLUDED.owner_host_id, updated_at = now()
WHERE external_account.owner_host_id IS NULL
   OR external_account.owner_host_id = EXCLUDED.owner_host_id
RETURNING id
"""

OWNED_ELSEWHERE = "SELECT id, owner_host_id FROM mid.external_account WHERE internal_name = %s"

RELEASE_DROPPED = """
UPDATE mid.external_account
SET enabled = false, owner_host_id = NULL, updated_at = now()
WHERE owner_host_id = %(host)s AND NOT (internal_name = ANY(%(names)s))
"""


async def sync_accounts(conn: psycopg.AsyncConnection, config: MidConfig) -> dict[str, int]:
    """Upsert this host's accounts of the file; return internal name -> id (all of them)."""
    ids: dict[str, int] = {}
    async with conn.transaction():
        for account in config.accounts:
            operator = account.operator
            marketing = account.marketing_account or account.name[len(operator) + 1 :]
            snapshot = account.model_dump(mode="json")  # SecretStr dumps as '**********'
            cursor = await conn.execute(
                UPSERT,
                {
                    "name": account.name,
                    "operator": operator,
                    "marketing": marketing,
                    "enabled": account.enabled,
                    "settings": json.dumps(snapshot),
                    "host": config.host_id,
                },
            )
            row = await cursor.fetchone()
            if row is None:  # another host owns it: leave its row as that host wrote it
                cursor = await conn.execute(OWNED_ELSEWHERE, (account.name,))
                row = await cursor.fetchone()
                assert row is not None
                log.warning(
                    "accounts.owned_by_another_host",
                    account=account.name,
                    owner=row[1],
                    host_id=config.host_id,
                )
            ids[account.name] = row[0]
        names = [account.name for account in config.accounts]
        await conn.execute(RELEASE_DROPPED, {"host": config.host_id, "names": names})
    return ids
