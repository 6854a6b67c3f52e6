"""The retention purge: what is past its retention leaves the queue tables, in bounded steps.

What it deletes, in this order (`purge`), each past its own retention (settings
`sms_process.*_retention`):

1. `mid.provider_msg_id`, by age: first, so that with broad_log_retention >=
   provider_msg_id_retention (settings) the ids of a message are gone before the message,
   and a receipt never matches an id whose message was purged;
2. `mid.receipt`, the receipt history, by processed_at; the unmatched and invalid receipts
   kept for inspection (SPEC section 7) are counted as they go;
3. `mid.broad_log`, final messages (delivered, failed, cancelled, no_receipt: the purge
   is the only move out of a final state, smsmta.queue.states) past their retention whose
   status the marketing side has pulled, if their delivery was pushed through the mid API;
4. `mid.inbox`, stuck rows: a long MO's part still held, or a receipt tried already, long
   after normal handling would have turned it into an unmatched receipt or a stored MO.

How batches are bounded: every statement deletes at most `purge_batch` rows, reached
through an index, in its own short transaction (`conn` in autocommit), then the purge
sleeps `purge_pause`. The rows to delete are gathered first into an array
(`id = ANY(ARRAY(...))`), so the delete itself goes by primary key whatever the planner
thinks of a join with the table: the MTA's claims and writes and the status pull's
snapshot (pg_snapshot_xmin) never wait long on it. Each statement is SKIP LOCKED or
idempotent, so a run cut short (a lost connection, SIGTERM) is simply run again, and one
still going beside another process's purge does no harm.

What stays: deliveries (a mid.delivery row, with its KPI counters and mid.delivery_sync,
is one row per delivery, the summary the marketing side and operators still look up once
its messages are gone; only its messages are purged); receipt history rows of a purged
message, until their own retention (no foreign key: history of a message that is no
longer there); the message log (broad_log_msg), never purged: it holds the operators'
qualifications, one row per normalised error.

Run by the SMS process (sms_process.housekeeping, every purge_period while it holds the
instance's lock); its log lines and metrics keep the SMS process's names
(`sms_process.purged*`, `smsmta_purged_rows{table}`). Touches: the database
(`mid.provider_msg_id`, `mid.receipt`, `mid.broad_log`, `mid.inbox`; `mid.delivery_sync`
read), the purge metric and log lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from smsmta import obs
from smsmta.settings import SmsProcessService

log = structlog.get_logger("smsmta.queue.purge")

# provider ids first: with broad_log_retention >= provider_msg_id_retention (settings) the
# ids of a message are gone before the message, so a receipt never matches an id whose
# message was purged (it would be kept as unmatched after the match wait). By created_at
# (ix_provider_msg_id_created_at).
PURGE_PROVIDER_MSG_ID = """
DELETE FROM mid.provider_msg_id WHERE id = ANY(ARRAY(
    SELECT id FROM mid.provider_msg_id
    WHERE created_at < now() - make_interval(secs => %(retention)s)
    LIMIT %(batch)s))
"""

# the receipt history, by processed_at (ix_receipt_processed_at); the unmatched and invalid
# receipts kept for inspection (SPEC section 7) are counted as they go
PURGE_RECEIPT = """
WITH gone AS (
    DELETE FROM mid.receipt WHERE id = ANY(ARRAY(
        SELECT id FROM mid.receipt
        WHERE processed_at < now() - make_interval(secs => %(retention)s)
        LIMIT %(batch)s))
    RETURNING result
)
SELECT count(*), count(*) FILTER (WHERE result IN ('unmatched', 'invalid')) FROM gone
"""

# Final messages past their retention, walked in (final_at, id) order on the partial index
# ix_broad_log_final, `purge_batch` index entries a statement from where the previous one
# stopped (keyset: never the same entries twice in a run). A candidate is deleted unless its
# delivery was pushed through the mid API (mid.delivery_sync) and the marketing side has not
# acknowledged its status yet: pulling from a cursor acknowledges every change up to it
# (midsourcing.store.pull), so a row after `pulled_xid.pulled_id` may not have reached the
# marketing side and stays (it is looked at again at the next run). Final is terminal (every
# update out of a status is guarded by a non-final one), so no row changes under the purge;
# rows locked by a receipt being handled are skipped and purged at the next run.
PURGE_BROAD_LOG = """
WITH candidate AS (
    SELECT b.id, b.delivery_id, b.status_xid, b.final_at FROM mid.broad_log b
    WHERE b.status IN ('delivered', 'failed', 'cancelled', 'no_receipt')
      AND b.final_at < now() - make_interval(secs => %(retention)s)
      AND (b.final_at, b.id) > (%(after_at)s::timestamptz, %(after_id)s::bigint)
    ORDER BY b.final_at, b.id
    LIMIT %(batch)s
    FOR UPDATE OF b SKIP LOCKED
), gone AS (
    DELETE FROM mid.broad_log WHERE id = ANY(ARRAY(
        SELECT c.id FROM candidate c
        WHERE NOT EXISTS (
            SELECT 1 FROM mid.delivery_sync s
            WHERE s.delivery_id = c.delivery_id
              AND (c.status_xid, c.id) > (s.pulled_xid, s.pulled_id))))
    RETURNING id
), last AS (
    SELECT final_at, id FROM candidate ORDER BY final_at DESC, id DESC LIMIT 1
)
SELECT (SELECT count(*) FROM candidate), (SELECT count(*) FROM gone),
       (SELECT final_at FROM last), (SELECT id FROM last)
"""

# Inbox rows that are stuck: a long MO's part still `held`, or a receipt tried already
# (attempts > 0), still there `inbox_retention` after it arrived (longer than the receipt
# match wait and the MO reassembly timeout: settings), which normal handling would have
# turned into an unmatched receipt or a stored MO long ago. Rows never tried (the SMS
# process was down) are left to the work loops. Ids grow with arrival, so the walk goes in
# id order (primary key: no index to maintain at receipt rate) and stops at the first batch
# that reaches rows younger than the retention. Nothing goes silently: counted by account,
# kind and held, logged, and in smsmta_purged_rows{table="inbox"}.
PURGE_INBOX = """
WITH candidate AS (
    SELECT id, account_id, kind, held, attempts, received_at FROM mid.inbox
    WHERE id > %(after_id)s
    ORDER BY id
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM mid.inbox WHERE id = ANY(ARRAY(
        SELECT id FROM candidate
        WHERE (held OR attempts > 0)
          AND received_at < now() - make_interval(secs => %(retention)s)))
    RETURNING account_id, kind, held
), scanned AS (
    SELECT count(*) AS n, max(id) AS last,
           count(*) FILTER (WHERE received_at >= now() - make_interval(secs => %(retention)s))
               AS young
    FROM candidate
)
SELECT s.n, s.last, s.young, g.account_id, g.kind, g.held, g.rows
FROM scanned s
LEFT JOIN (SELECT account_id, kind::text, held, count(*) AS rows FROM gone GROUP BY 1, 2, 3) g
    ON true
"""

#: called after each purge statement with (table, rows deleted, seconds): for benchmarks
PurgeObserver = Callable[[str, int, float], None]


async def purge(
    conn: psycopg.AsyncConnection,
    settings: SmsProcessService,
    observe: PurgeObserver | None = None,
) -> dict[str, int]:
    """Delete what is past its retention, one bounded statement at a time; return counts.

    In order: provider_msg_id, receipt, broad_log, inbox (the statements above say what
    each takes and through which index). `conn` must be in autocommit: each statement is
    its own short transaction, followed by `purge_pause`. Counts: rows deleted by table,
    plus `receipt_unmatched` (unmatched and invalid receipts among the receipt history
    purged) and `broad_log_unpulled` (final messages past their retention kept because the
    marketing side has not pulled their status yet).

    What stays, and why: the module docstring.
    """
    counts = dict.fromkeys(
        (
            "provider_msg_id",
            "receipt",
            "receipt_unmatched",
            "broad_log",
            "broad_log_unpulled",
            "inbox",
        ),
        0,
    )
    batch = settings.purge_batch
    by_origin: dict[tuple[int, str, bool], int] = {}

    def done(table: str, deleted: int, seconds: float) -> None:
        counts[table] += deleted
        if deleted:  # counted as it goes: a purge cut short by SIGTERM is counted too
            obs.SP_PURGED.labels(table).inc(deleted)
        if observe is not None:
            observe(table, deleted, seconds)

    async def pause() -> None:
        if settings.purge_pause:
            await asyncio.sleep(settings.purge_pause)

    try:
        retention = settings.provider_msg_id_retention
        while True:
            cursor = await _timed(
                conn, PURGE_PROVIDER_MSG_ID, {"retention": retention, "batch": batch}
            )
            done("provider_msg_id", cursor.rowcount, cursor.seconds)
            if cursor.rowcount < batch:
                break
            await pause()

        retention = settings.receipt_retention
        while True:
            cursor = await _timed(conn, PURGE_RECEIPT, {"retention": retention, "batch": batch})
            deleted, unmatched = (await cursor.fetchone()) or (0, 0)
            counts["receipt_unmatched"] += unmatched
            done("receipt", deleted, cursor.seconds)
            if deleted < batch:
                break
            await pause()

        parameters: dict[str, Any] = {
            "retention": settings.broad_log_retention,
            "batch": batch,
            "after_at": "-infinity",
            "after_id": 0,
        }
        while True:
            cursor = await _timed(conn, PURGE_BROAD_LOG, parameters)
            scanned, deleted, last_at, last_id = (await cursor.fetchone()) or (0, 0, None, None)
            counts["broad_log_unpulled"] += scanned - deleted
            done("broad_log", deleted, cursor.seconds)
            if scanned < batch or last_id is None:
                break
            parameters["after_at"], parameters["after_id"] = last_at, last_id
            await pause()

        parameters = {"retention": settings.inbox_retention, "batch": batch, "after_id": 0}
        while True:
            cursor = await _timed(conn, PURGE_INBOX, parameters)
            rows = await cursor.fetchall()
            scanned, last_id, young = rows[0][:3] if rows else (0, None, 0)
            deleted = 0
            for *_, account_id, kind, held, n in rows:
                if n:
                    key = (account_id, kind, held)
                    by_origin[key] = by_origin.get(key, 0) + n
                    deleted += n
            done("inbox", deleted, cursor.seconds)
            if scanned < batch or young or last_id is None:
                break
            parameters["after_id"] = last_id
            await pause()
    finally:
        _log_purge(settings, counts, by_origin)
    return counts


def _log_purge(
    settings: SmsProcessService,
    counts: dict[str, int],
    by_origin: dict[tuple[int, str, bool], int],
) -> None:
    for table in ("provider_msg_id", "receipt", "broad_log", "inbox"):
        if counts[table]:
            log.info("sms_process.purged", table=table, rows=counts[table])
    if counts["receipt_unmatched"]:
        log.warning(
            "sms_process.purged_unmatched_receipts",
            rows=counts["receipt_unmatched"],
            retention_seconds=settings.receipt_retention,
        )
    if counts["broad_log_unpulled"]:
        log.info(
            "sms_process.purge_kept_unpulled",
            rows=counts["broad_log_unpulled"],
            note="final messages past their retention whose status the marketing side has "
            "not pulled yet",
        )
    for (account_id, kind, held), n in sorted(by_origin.items()):
        log.warning(
            "sms_process.purged_inbox",
            account_id=account_id,
            kind=kind,
            held=held,
            rows=n,
            retention_seconds=settings.inbox_retention,
        )


class _TimedCursor:
    """A cursor and how long its statement took."""

    def __init__(self, cursor: psycopg.AsyncCursor[Any], seconds: float) -> None:
        self.cursor = cursor
        self.seconds = seconds
        self.rowcount = cursor.rowcount

    async def fetchone(self) -> Any:
        return await self.cursor.fetchone()

    async def fetchall(self) -> list[Any]:
        return await self.cursor.fetchall()


async def _timed(
    conn: psycopg.AsyncConnection, query: str, parameters: dict[str, Any]
) -> _TimedCursor:
    started = time.monotonic()
    cursor = await conn.execute(query, parameters)
    return _TimedCursor(cursor, time.monotonic() - started)
