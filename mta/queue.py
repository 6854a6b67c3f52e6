"""The claimed messages in an MTA child: `Mt`, and the delivery options they are sent with.

The claim itself (the SQL, the blacklist lookup, the reclaim of dead children's claims)
is smsmta.queue.claims, the queue layer; `claim` here turns its rows into `Mt`s. `Mt`
is one claimed message in memory, with what the sender learns about it. Delivery
options are read once per delivery and cached (`DeliveryCache`).
Touches: the database through smsmta.queue.claims (`mid.broad_log`, `mid.delivery`,
`mid.short_code_blacklist`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from mta.submit import DeliveryOptions
from smsmta.queue import claims
from smsmta.smpp.pdu import Pdu


class Mt:
    """One claimed message and the state of its parts in this child."""

    __slots__ = (
        "acked",
        "address",
        "blacklisted",
        "delivery_id",
        "error_status",
        "id",
        "options",
        "part_conns",
        "pdus",
        "possible_duplicate",
        "provider_ids",
        "resolved",
        "retry_count",
        "started",
        "text",
        "unknown_attempts",
    )

    def __init__(
        self,
        id: int,
        delivery_id: int,
        address: str,
        text: str,
        retry_count: int,
        possible_duplicate: bool,
        blacklisted: bool = False,
    ) -> None:
        self.id = id
        self.blacklisted = blacklisted
        self.delivery_id = delivery_id
        self.address = address
        self.text = text
        self.retry_count = retry_count
        self.possible_duplicate = possible_duplicate
        self.options: DeliveryOptions | None = None
        self.pdus: tuple[Pdu, ...] = ()
        self.provider_ids: list[str | None] = []
        self.part_conns: list[Any] = []  # the connection each part's answer came on
        self.acked = 0  # parts answered OK
        self.resolved = 0  # parts answered, OK or not
        self.error_status: int | None = None
        self.unknown_attempts = 0
        self.started = False  # a part went on the wire

    def set_pdus(self, pdus: tuple[Pdu, ...]) -> None:
        self.pdus = pdus
        self.provider_ids = [None] * len(pdus)
        self.part_conns = [None] * len(pdus)

    @property
    def complete(self) -> bool:
        return self.resolved == len(self.pdus)

    def validity_end(self, default_seconds: float) -> datetime:
        from datetime import timedelta

        options = self.options
        assert options is not None and options.created_at is not None
        return options.validity_end or options.created_at + timedelta(seconds=default_seconds)


async def claim(
    conn: psycopg.AsyncConnection, account_id: int, owner: str, limit: int, **blacklist: str
) -> list[Mt]:
    """Claim up to `limit` due messages of the account for this child, as `Mt`s.

    `blacklist`: the keywords of smsmta.queue.claims.claim (`default_source`,
    `short_code`, `default_country`), which say whose blacklist applies to each message.
    """
    return [Mt(*row) for row in await claims.claim(conn, account_id, owner, limit, **blacklist)]


class DeliveryCache:
    """Delivery options by id, read from the database once."""

    def __init__(self) -> None:
        self._options: dict[int, DeliveryOptions] = {}

    async def resolve(self, conn: psycopg.AsyncConnection, mts: list[Mt]) -> None:
        missing = {mt.delivery_id for mt in mts} - self._options.keys()
        if missing:
            for row in await claims.delivery_options(conn, missing):
                self._options[row[0]] = DeliveryOptions(*row)
        for mt in mts:
            mt.options = self._options[mt.delivery_id]
