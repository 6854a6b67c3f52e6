"""The outcome writer: every answer of the SMSC made durable, in batches.

The sender hands over finished messages (`sent`, `submit_failed`, `failed`, `retry`,
`release`); one flush writes all that accumulated in ONE transaction: provider ids by
COPY into `provider_msg_id`, `broad_log` rows updated from arrays (`unnest`), the
message log upserted for synchronous errors (its qualification decides retry or
failure, through `smsmta.policy`), the delivery KPIs incremented last. Flushes run back
to back: while one commits, the next batch gathers, so the batch size follows the load
and no message waits for a timer. After each commit the callbacks given with the
messages run (the sender frees the window slots that waited for durability).

The loop (group commit, callbacks after the commit, each guarded, a lost database ridden
through and logged once an outage as `mta.flush_failed` / `mta.flush_recovered`, a refused
batch retried then fatal) is smsmta.batch's `BatchWriter`; the statements, the
transitions they make and the order they must run in are the queue layer's
(smsmta.queue.outcomes; the message log: smsmta.queue.message_log). This module says
what a batch holds, asks the policy about synchronous errors and tallies what each
delivery's KPIs gain.

Every update is guarded by the child's lease owner: a row another child reclaimed is
left alone (and counted: it will go out again, a duplicate the log warns about).
Touches: the database through smsmta.queue (`mid.broad_log`, `mid.provider_msg_id`,
`mid.broad_log_msg`, `mid.delivery`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import structlog

from mta.queue import Mt
from smsmta.batch import Batch, BatchStats, BatchWriter
from smsmta.batch import Callback as BatchCallback
from smsmta.db import FailureType
from smsmta.policy import RetryPolicy, Verdict
from smsmta.queue import message_log, outcomes

log = structlog.get_logger("mta.writer")

Callback = Callable[[], None]


@dataclass
class _Batch(Batch):
    sent: list[tuple[int, Mt]] = field(default_factory=list)  # (account_id, mt)
    submit_failed: list[tuple[Mt, str]] = field(default_factory=list)  # (mt, message-log key)
    failed: list[tuple[Mt, FailureType, str]] = field(default_factory=list)
    retry: list[tuple[Mt, datetime, bool, str]] = field(default_factory=list)  # counted?
    callbacks: list[BatchCallback] = field(default_factory=list)
    lost: int = 0  # rows whose lease another child holds (set by the write)

    def __len__(self) -> int:
        return len(self.sent) + len(self.submit_failed) + len(self.failed) + len(self.retry)

    def take(self, limit: int | None) -> _Batch:
        """Everything: the writer's batch is one transaction whatever its size (its
        callbacks are not tied to items, so it cannot be cut)."""
        assert limit is None, "the outcome writer takes its whole batch"
        head = _Batch(self.sent, self.submit_failed, self.failed, self.retry, self.callbacks)
        self.sent, self.submit_failed, self.failed, self.retry = [], [], [], []
        self.callbacks = []
        return head

    def put_back(self, head: _Batch) -> None:
        self.sent[:0] = head.sent
        self.submit_failed[:0] = head.submit_failed
        self.failed[:0] = head.failed
        self.retry[:0] = head.retry
        self.callbacks[:0] = head.callbacks


@dataclass
class FlushStats(BatchStats):
    lost_leases: int = 0


class Writer(BatchWriter[_Batch]):
    """The MTA child's outcome writer; see the module docstring (the loop: smsmta.batch)."""

    stats: FlushStats

    def __init__(
        self,
        conn: psycopg.AsyncConnection | None,
        owner: str,
        policy: RetryPolicy,
        *,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection]],
        password: str | None = None,
    ) -> None:
        super().__init__(
            _Batch(),
            connect,
            conn=conn,
            event_prefix="mta",
            name="flush",
            password=password,
            logger=log,
        )
        self.owner = owner
        self.policy = policy
        self.stats = FlushStats()

    # --- what the sender hands over ---------------------------------------------------

    def sent(self, account_id: int, mt: Mt, callback: Callback | None = None) -> None:
        self._pending.sent.append((account_id, mt))
        self._handed(callback)

    def submit_failed(self, mt: Mt, log_key: str, callback: Callback | None = None) -> None:
        """A non-zero submit_sm_resp: the message log's qualification decides."""
        self._pending.submit_failed.append((mt, log_key))
        self._handed(callback)

    def failed(
        self, mt: Mt, failure_type: FailureType, reason: str, callback: Callback | None = None
    ) -> None:
        """A failure decided without the SMSC (unencodable text, blacklisted...)."""
        self._pending.failed.append((mt, failure_type, reason))
        self._handed(callback)

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
        self._pending.retry.append((mt, at, counted, reason))
        self._handed(callback)

    def _handed(self, callback: Callback | None) -> None:
        if callback is not None:
            self._pending.callbacks.append(callback)
        self._idle.clear()
        self._wakeup.set()

    # --- writing (the loop, its retries and callbacks: smsmta.batch) -------------------

    async def _write(self, conn: psycopg.AsyncConnection, batch: _Batch) -> None:
        batch.lost = await self._outcomes(conn, batch)

    def _committed(self, batch: _Batch) -> None:
        if batch.lost:
            self.stats.lost_leases += batch.lost
            log.warning("mta.lease_lost_rows", rows=batch.lost, owner=self.owner)

    async def _outcomes(self, conn: psycopg.AsyncConnection, batch: _Batch) -> int:
        owner = self.owner
        kpi: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])  # sent, hard, soft
        lost = 0
        if batch.sent:
            await outcomes.copy_provider_ids(
                conn,
                (
                    (account_id, provider_id, mt.id, mt.delivery_id, part_no)
                    for account_id, mt in batch.sent
                    for part_no, provider_id in enumerate(mt.provider_ids, 1)
                ),
            )
            mts = [mt for _, mt in batch.sent]
            updated = await outcomes.record_sent(
                conn,
                owner,
                [outcomes.Sent(mt.id, len(mt.pdus), mt.possible_duplicate) for mt in mts],
            )
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
                decision, reason = self.policy.after_failure(
                    qual, mt.retry_count, now, mt.validity_end(self.policy.default_validity), key
                )
                if decision.verdict is Verdict.RETRY:
                    assert decision.next_try_at is not None
                    retry.append((mt, decision.next_try_at, True, reason))
                else:
                    failed.append((mt, decision.failure_type, reason))
        if failed:
            changed = await outcomes.record_failed(
                conn,
                owner,
                [
                    outcomes.Failed(
                        mt.id,
                        kind,
                        reason,
                        msg_ids.get(mt.id),
                        len(mt.pdus),
                        mt.possible_duplicate,
                    )
                    for mt, kind, reason in failed
                ],
            )
            lost += len(failed) - len(changed)
            for delivery_id, kind in changed:
                if kind is FailureType.HARD:
                    kpi[delivery_id][1] += 1
                elif kind is FailureType.SOFT:
                    kpi[delivery_id][2] += 1
        if retry:
            await outcomes.record_retry(
                conn,
                owner,
                [
                    outcomes.Retry(
                        mt.id, at, counted, reason, msg_ids.get(mt.id), mt.possible_duplicate
                    )
                    for mt, at, counted, reason in retry
                ],
            )
        await outcomes.count_outcomes(conn, kpi)  # last: see smsmta.queue.outcomes
        return lost
