"""The status page shows, per account, the binds the SMSC refused and the last status
(read from the services' metrics endpoints, as the page reads binds up)."""

from __future__ import annotations

import asyncio
import re

import psycopg
from sqlalchemy import URL

from midsourcing.status import collect, render
from smsmta import obs
from smsmta.accounts import sync_accounts
from smsmta.binds import BindWatch
from smsmta.db.engine import libpq_dsn
from smsmta.settings import MidConfig
from smsmta.smpp.aio import BindError
from smsmta.smpp.constants import CommandStatus

ACCOUNT = "stat_refused"


async def test_refused_binds_per_account_with_the_last_status(migrated_db_url: URL) -> None:
    port = obs.serve_metrics("127.0.0.1", 0)  # this process plays the MTA
    config = MidConfig.model_validate(
        {
            "kind": "mid",
            "mta": {"metrics_port": port, "metrics_host": "127.0.0.1"},
            "sms_process": {"metrics_port": None},
            "accounts": [
                {
                    "name": ACCOUNT,
                    "operator": "stat",
                    "connection": {"server": "127.0.0.1", "system_id": "stat", "password": "x"},
                }
            ],
        }
    )
    watch = BindWatch(ACCOUNT, "stat", "transmitter")
    for status in (CommandStatus.ESME_RBINDFAIL, CommandStatus.ESME_RBINDFAIL):
        watch.failed(BindError(status))
    await asyncio.sleep(0.01)  # a later clock reading
    watch.failed(BindError(CommandStatus.ESME_RINVPASWD))  # the last one
    async with await psycopg.AsyncConnection.connect(
        libpq_dsn(migrated_db_url), autocommit=True
    ) as conn:
        await sync_accounts(conn, config)
        status = await collect(conn, config, None)  # every operator's accounts
    [account] = [a for a in status.accounts if a.name == ACCOUNT]
    assert account.binds_refused == 3 and account.last_refusal == "ESME_RINVPASWD"
    page = render(status, "ops")
    row = re.search(rf"data-account='{ACCOUNT}'>(.*?)</tr>", page, re.S)
    assert row is not None
    cell = re.search(r"<td class='refused'>(.*?)</td>", row.group(1))
    assert cell is not None and cell.group(1).startswith("3 (last ESME_RINVPASWD at ")
