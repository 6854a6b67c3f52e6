"""Keep `mid.external_account` in step with the accounts of the mid settings file.

Every mid-side service calls `sync_accounts()` at start: each account of the YAML is
upserted by internal name with a snapshot of its settings (secrets masked), and the
returned mapping gives the ids that queue rows and provider ids refer to. Accounts that
left the file are disabled, never deleted: their messages and receipts stay. Touches:
the database.
"""

from __future__ import annotations

import json

import psycopg

from smsmta.settings import MidConfig

UPSERT = """
INSERT INTO mid.external_account (internal_name, operator_login, marketing_account, enabled,
                                  settings)
VALUES (%(name)s, %(operator)s, %(marketing)s, %(enabled)s, %(settings)s::jsonb)
ON CONFLICT (internal_name) DO UPDATE
SET operator_login = EXCLUDED.operator_login, marketing_account = EXCLUDED.marketing_account,
    enabled = EXCLUDED.enabled, settings = EXCLUDED.settings, updated_at = now()
RETURNING id
"""


async def sync_accounts(conn: psycopg.AsyncConnection, config: MidConfig) -> dict[str, int]:
    """Upsert every account of the file; return internal name -> id."""
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
                },
            )
            row = await cursor.fetchone()
            assert row is not None
            ids[account.name] = row[0]
        names = [account.name for account in config.accounts]
        await conn.execute(
            "UPDATE mid.external_account SET enabled = false, updated_at = now() "
            "WHERE enabled AND NOT (internal_name = ANY(%s))",
            (names,),
        )
    return ids
