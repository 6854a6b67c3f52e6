"""The outcome writer: every answer of the SMSC made durable, in batches.

The sender hands over finished messages (`sent`, `submit_failed`, `failed`, `retry`,
`release`); one flush writes all that accumulated in ONE transaction: provider ids by
COPY into `provider_msg_id`, `broad_log` rows updated from arrays (`unnest`), the
message log upserted for synchronous errors (its qualification decides retry or
failure, through `smsmta.policy`), the delivery KPIs incremented. Flushes run back to back:
while one commits, the next batch gathers, so the batch size follows the load and no
message waits for a timer. After each commit the callbacks given with the messages run
(the sender frees the window slots that waited for durability).

Every update is guarded by the child's lease owner: a row another child reclaimed is
left alone (and counted: it will go out again, a duplicate the log warns about).
Touches: the database (`mid.broad_log`, `mid.provider_msg_id`, `mid.broad_log_msg`,
`mid.delivery`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import structlog

from mta.queue import Mt
from smsmta import message_log
from smsmta.db import FailureType
from smsmta.policy import RetryPolicy, Verdict

log = structlog.get_logger("mta.writer")

SENT = """
UPDATE mid.broad_log b
SET status = 'sent', parts = v.parts, sent_at = now(), updated_at = now(), lease_owner = NULL,
    possible_duplicate = b.possible_duplicate OR v.dup
FROM unnest(%(ids)s::bigint[], %(parts)s::smallint[], %(dup)s::boolean[]) AS v(id, parts, dup)
WHERE b.id = v.id AND b.lease_owner = %(owner)s
RETURNING b.id
"""

FAILED = """
UPDATE mid.broad_log b
SET status = 'failed', failure_type = v.type::mid.failure_type, failure_reason = v.reason,
    broad_log_msg_id = v.msg, final_at = now(), updated_at = now(), lease_owner = NULL,
    parts = v.parts, possible_duplicate = b.possible_duplicate OR v.dup
FROM unnest(%(ids)s::bigint[], %(types)s::text[], %(reasons)s::text[], %(msgs)s::bigint[],
            %(parts)s::smallint[], %(dup)s::boolean[]) AS v(id, type, reason, msg, parts, dup)
WHERE b.id = v.id AND b.lease_owner = %(owner)s
RETURNING b.id, b.delivery_id, v.type
"""

RETRY = """
UPDATE mid.broad_log b
SET status = 'pending', next_try_at = v.at, retry_count = b.retry_count + v.counted,
    failure_type = 'soft', failure_reason = v.reason, broad_log_msg_id = v.msg,
    updated_at = now(), lease_owner = NULL, possible_duplicate = b.possible_duplicate OR v.dup
FROM unnest(%(ids)s::bigint[], %(at)s::timestamptz[], %(counted)s::smallint[],
            %(reasons)s::text[], %(msgs)s::bigint[], %(dup)s::boolean[])
     AS v(id, at, counted, reason, msg, dup)
WHERE b.id = v.id AND b.lease_owner = %(owner)s
"""


KPIS = """
UPDATE mid.delivery d
SET sent = d.sent + v.sent, failed_hard = d.failed_hard + v.hard,
    failed_soft = d.failed_soft + v.soft, updated_at = now()
FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::int[]) AS v(id, sent, hard, soft)
WHERE d.id = v.id
"""

COPY_PROVIDER_IDS = (
    "COPY mid.provider_msg_id (account_id, provider_id, broad_log_id, delivery_id, part_no) "
    "FROM STDIN"
)

Callback = Callable[[], None]


@dataclass
class _Batch:
    sent: list[tuple[int, Mt]] = field(default_factory=list)  # (account_id, mt)
    submit_failed: list[tuple[Mt, str]] = field(default_factory=list)  # (mt, message-log key)
    failed: list[tuple[Mt, FailureType, str]] = field(default_factory=list)
    retry: list[tuple[Mt, datetime, bool, str]] = field(default_factory=list)  # counted?
    callbacks: list[Callback] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent) + len(self.submit_failed) + len(self.failed) + len(self.retry)


@dataclass
class FlushStats:
    flushes: int = 0
    rows: int = 0
    lost_leases: int = 0


class Writer:
    def __init__(
        self,
        conn: psycopg.AsyncConnection,
        owner: str,
        policy: RetryPolicy,
        *,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]] | None = None,
    ) -> None:
        self.conn = conn
        self.connect = connect
        self.owner = owner
        self.policy = policy
        self.stats = FlushStats()
        self._batch = _Batch()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self.on_flushed: Callable[[int, float], None] | None = None  # (rows, seconds)

    # --- what the sender hands over ---------------------------------------------------

    def sent(self, account_id: int, mt: Mt, callback: Callback | None = None) -> None:
        self._batch.sent.append((account_id, mt))
        self._queued(callback)

    def submit_failed(self, mt: Mt, log_key: str, callback: Callback | None = None) -> None:
        """A non-zero submit_sm_resp: the message log's qualification decides."""
        self._batch.submit_failed.append((mt, log_key))
        self._queued(callback)

    def failed(
        self, mt: Mt, failure_type: FailureType, reason: str, callback: Callback | None = None
    ) -> None:
        """A failure decided without the SMSC (unencodable text, blacklisted...)."""
        self._batch.failed.append((mt, failure_type, reason))
        self._queued(callback)

    def retry(
        self,
        mt: Mt,
        at: datetime,
        reason: str,
        *,
        counted: bool = True,
        callback: Callback | None = None,
    ) -> None:
        """Back to the queue at `at` (release at shutdown: counted=False, at=now)."""
        self._batch.retry.append((mt, at, counted, reason))
        self._queued(callback)

    def _queued(self, callback: Callback | None) -> None:
        if callback is not None:
            self._batch.callbacks.append(callback)
        self._idle.clear()
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        return len(self._batch)

    # --- flushing --------------------------------------------------------------------

    async def run(self) -> None:
        """Flush back to back while there is something to write; until close()."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if len(self._batch) or self._batch.callbacks:
                try:
                    await self.flush()
                except psycopg.OperationalError as error:
                    # the database went away: keep the batch, reconnect, try again
                    log.warning("mta.flush_failed", error=str(error), rows=len(self._batch))
                    await asyncio.sleep(1.0)
                    if self.connect is not None and (self.conn.closed or self.conn.broken):
                        with contextlib.suppress(psycopg.OperationalError):
                            self.conn = await self.connect()
                    self._wakeup.set()
                    continue
            if not len(self._batch):
                self._idle.set()
                if self._closing:
                    return

    async def close(self) -> None:
        """Write what is left, then stop run()."""
        self._closing = True
        self._wakeup.set()
        await self._idle.wait()

    async def flush(self) -> None:
        batch, self._batch = self._batch, _Batch()
        started = asyncio.get_running_loop().time()
        try:
            async with self.conn.transaction():
                lost = await self._write(batch)
        except BaseException:
            # nothing was written: put the batch back in front of what came meanwhile
            self._batch = _merge(batch, self._batch)
            raise
        self.stats.flushes += 1
        self.stats.rows += len(batch)
        if lost:
            self.stats.lost_leases += lost
            log.warning("mta.lease_lost_rows", rows=lost, owner=self.owner)
        for callback in batch.callbacks:
            callback()
        if self.on_flushed is not None:
            self.on_flushed(len(batch), asyncio.get_running_loop().time() - started)

    async def _write(self, batch: _Batch) -> int:
        conn, owner = self.conn, self.owner
        kpi: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # sent, hard, soft
        lost = 0
        if batch.sent:
            async with conn.cursor() as cursor:
                async with cursor.copy(COPY_PROVIDER_IDS) as copy:
                    for account_id, mt in batch.sent:
                        for part_no, provider_id in enumerate(mt.provider_ids, 1):
                            await copy.write_row(
                                (account_id, provider_id, mt.id, mt.delivery_id, part_no)
                            )
                mts = [mt for _, mt in batch.sent]
                await cursor.execute(
                    SENT,
                    {
                        "ids": [mt.id for mt in mts],
                        "parts": [len(mt.pdus) for mt in mts],
                        "dup": [mt.possible_duplicate for mt in mts],
                        "owner": owner,
                    },
                )
                updated = {row[0] for row in await cursor.fetchall()}
                lost += len(mts) - len(updated)
                for mt in mts:
                    if mt.id in updated:
                        kpi[mt.delivery_id][0] += 1
        failed = list(batch.failed)
        retry = list(batch.retry)
        msg_ids: dict[int, int] = {}
        if batch.submit_failed:
            # a synchronous error has no provider text: its key is its full text
            qualification = await message_log.record(
                conn, ((key, key) for _, key in batch.submit_failed)
            )
            now = datetime.now(UTC)
            for mt, key in batch.submit_failed:
                msg_id, qual = qualification[key]
                msg_ids[mt.id] = msg_id
                decision = self.policy.decide(
                    qual, mt.retry_count, now, mt.validity_end(self.policy.default_validity)
                )
                reason = key if not decision.reason else f"{key} ({decision.reason})"
                if decision.verdict is Verdict.RETRY:
                    assert decision.next_try_at is not None
                    retry.append((mt, decision.next_try_at, True, reason))
                else:
                    failed.append((mt, decision.failure_type, reason))
        if failed:
            cursor = await conn.execute(
                FAILED,
                {
                    "ids": [mt.id for mt, _, _ in failed],
                    "types": [kind.value for _, kind, _ in failed],
                    "reasons": [reason for _, _, reason in failed],
                    "msgs": [msg_ids.get(mt.id) for mt, _, _ in failed],
                    "parts": [len(mt.pdus) for mt, _, _ in failed],
                    "dup": [mt.possible_duplicate for mt, _, _ in failed],
                    "owner": owner,
                },
            )
            rows = await cursor.fetchall()
            lost += len(failed) - len(rows)
            for _, delivery_id, kind in rows:
                if kind == FailureType.HARD.value:
                    kpi[delivery_id][1] += 1
                elif kind == FailureType.SOFT.value:
                    kpi[delivery_id][2] += 1
        if retry:
            await conn.execute(
                RETRY,
                {
                    "ids": [mt.id for mt, _, _, _ in retry],
                    "at": [at for _, at, _, _ in retry],
                    "counted": [1 if counted else 0 for _, _, counted, _ in retry],
                    "reasons": [reason for _, _, _, reason in retry],
                    "msgs": [msg_ids.get(mt.id) for mt, _, _, _ in retry],
                    "dup": [mt.possible_duplicate for mt, _, _, _ in retry],
                    "owner": owner,
                },
            )
        if kpi:
            ids = sorted(kpi)
            await conn.execute(
                KPIS,
                (ids, [kpi[i][0] for i in ids], [kpi[i][1] for i in ids], [kpi[i][2] for i in ids]),
            )
        return lost


def _merge(first: _Batch, second: _Batch) -> _Batch:
    return _Batch(
        sent=first.sent + second.sent,
        submit_failed=first.submit_failed + second.submit_failed,
        failed=first.failed + second.failed,
        retry=first.retry + second.retry,
        callbacks=first.callbacks + second.callbacks,
    )
