"""The marketing service: the push and pull loops between the marketing schema and the mid API.

The push loop sends each `pushing` delivery: create it on the mid server (idempotent on
the marketing delivery id), then chunks of `push_chunk_size` messages in id order; the
mid server acknowledges a chunk only after committing it, and `push_cursor` advances only
after that acknowledgement, so a chunk whose answer was lost is pushed again and the mid
server skips what it already has: nothing lost, nothing doubled. A chunk whose rows
with numbers the mid server cannot canonicalise were refused (422 `rejected_numbers`, the
rest queued) counts as pushed: those messages become `failed_hard` with the reason
(`REFUSED` prefix) in the same transaction as the cursor, and are left out of the count
`complete` checks. When every chunk is in,
`complete` makes the mid server check the count; a mismatch rewinds the cursor to 0.
Failures back off exponentially (`retry_initial` .. `retry_max`) per delivery; a refusal
(4xx: unknown account, rights) backs off at `retry_max` and is kept in `push_error`.

The pull loop asks the mid server, for each delivery being sent, the status changes after
its cursor, page by page, and applies each page and the new cursor in one transaction;
KPIs (to send, sent, delivered, failed hard / soft, cancelled, and failures by error) are
recomputed from the per-message statuses. A pull from a cursor tells the mid server that
what came before it was pulled (mid.delivery_sync, which the SMS process's purge keeps
unpulled statuses by); so before a finished delivery stops being pulled, the cursor of its
last page is sent back by one more pull (`acknowledge`).

Each loop runs on a database connection of its own and rides out a database outage
(smsmta.backoff.Outage). The loops read the marketing schema here and write it only
through midsourcing.marketing, its one writer. Touches: the marketing schema (through
midsourcing.marketing), the mid API (through midsourcing.client), metrics and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import structlog

from midsourcing import marketing
from midsourcing.client import MidClient, MidError, RejectedNumbers
from midsourcing.schemas import DeliveryCreate, Message
from smsmta import obs
from smsmta.backoff import Backoff, Outage, dsn_password
from smsmta.settings import MarketingConfig
from smsmta.systemd import Notifier, keep_alive

# the service's events keep the logger name they have always had
log = structlog.get_logger("midsourcing.marketing")

RECOUNT_AFTER = 10.0  # see Service._kpis


@dataclass(frozen=True)
class PullResult:
    """What `Service.pull_delivery` did: changes applied, the last page's lag and mid state,
    the cursor reached, and whether the mid server has been sent that cursor back."""

    applied: int
    lag: float
    mid_state: str
    cursor: str
    acknowledged: bool


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """The wait after a delivery's `attempts`-th failed push in a row (smsmta.backoff)."""
    return Backoff(initial, maximum).delay(attempts)


class Service:
    """The marketing service's loops over one database and one client per account."""

    def __init__(
        self,
        config: MarketingConfig,
        dsn: str,
        clients: dict[str, MidClient] | None = None,
    ) -> None:
        self.config = config
        self.dsn = dsn
        self.settings = config.marketing
        self.clients = clients if clients is not None else {}
        self.stopping = asyncio.Event()
        # delivery -> (loop time of its last KPI count, seconds it took, (to_send, sent))
        self._counted: dict[int, tuple[float, float, tuple[int, int]]] = {}

    def client(self, account: str) -> MidClient:
        if account not in self.clients:
            self.clients[account] = MidClient(self.config.account(account))
        return self.clients[account]

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    # push --------------------------------------------------------------------------------

    async def push_once(self, conn: psycopg.AsyncConnection) -> int:
        """Push every due delivery as far as it goes; the number of chunks accepted."""
        cursor = await conn.execute(
            "SELECT d.id, t.internal_name FROM marketing.delivery d "
            "JOIN marketing.delivery_template t ON t.id = d.template_id "
            "WHERE d.state = 'pushing' AND (d.next_push_at IS NULL OR d.next_push_at <= now()) "
            "ORDER BY d.id"
        )
        chunks = 0
        for delivery_id, template_name in await cursor.fetchall():
            if self.stopping.is_set():
                break
            chunks += await self.push_delivery(conn, delivery_id, template_name)
        return chunks

    async def _failed(
        self, conn: psycopg.AsyncConnection, delivery_id: int, account: str, exc: MidError
    ) -> None:
        attempts = await marketing.push_failed(conn, delivery_id, str(exc))
        s = self.settings
        delay = backoff(attempts, s.retry_initial, s.retry_max) if exc.retryable else s.retry_max
        await marketing.retry_push_in(conn, delivery_id, delay)
        obs.MKT_PUSHED_CHUNKS.labels(account, "retried").inc()
        log.warning(
            "push failed",
            delivery=delivery_id,
            account=account,
            attempt=attempts,
            retry_in=delay,
            retryable=exc.retryable,
            error=str(exc),
        )

    async def push_delivery(
        self, conn: psycopg.AsyncConnection, delivery_id: int, template_name: str
    ) -> int:
        try:
            template = self.config.template(template_name)
        except KeyError:
            log.error(
                "template gone from the settings", delivery=delivery_id, template=template_name
            )
            return 0
        account = template.account
        client = self.client(account)
        chunks = 0
        try:
            cursor = await conn.execute(
                "SELECT mid_delivery_id, validity_end, label, push_cursor, total "
                "FROM marketing.delivery WHERE id = %s",
                (delivery_id,),
            )
            row = await cursor.fetchone()
            assert row is not None
            mid_id, validity_end, label, push_cursor, total = row
            if mid_id is None:
                if validity_end is None and template.validity:
                    validity_end = datetime.now(UTC) + timedelta(seconds=template.validity)
                    await marketing.set_validity_end(conn, delivery_id, validity_end)
                info = await client.create_delivery(
                    DeliveryCreate(
                        marketing_account=account,
                        marketing_delivery_id=str(delivery_id),
                        label=label,
                        options=marketing.template_options(template, validity_end),
                    )
                )
                mid_id = info.id
                await marketing.set_mid_delivery(conn, delivery_id, mid_id, info.state.value)
            while not self.stopping.is_set():
                state = await conn.execute(
                    "SELECT state::text FROM marketing.delivery WHERE id = %s", (delivery_id,)
                )
                if (await state.fetchone() or ("",))[0] != "pushing":
                    return chunks  # cancelled meanwhile
                rows = await conn.execute(
                    "SELECT id, address, text FROM marketing.delivery_message "
                    "WHERE delivery_id = %s AND id > %s ORDER BY id LIMIT %s",
                    (delivery_id, push_cursor, self.settings.push_chunk_size),
                )
                messages = [
                    Message.model_construct(id=i, to=address, text=text)
                    for i, address, text in await rows.fetchall()
                ]
                if not messages:
                    break
                refused: dict[int, str] = {}
                try:
                    result = await client.push(mid_id, messages)
                except RejectedNumbers as exc:  # the rest of the chunk is queued
                    result, refused = exc.result, exc.refused
                push_cursor = messages[-1].id
                await marketing.chunk_pushed(conn, delivery_id, push_cursor, refused)
                chunks += 1
                obs.MKT_PUSHED_CHUNKS.labels(account, "accepted").inc()
                obs.MKT_PUSHED_MESSAGES.labels(account).inc(result.received)
                log.info(
                    "chunk pushed",
                    delivery=delivery_id,
                    mid_delivery=mid_id,
                    messages=result.received,
                    duplicates=result.duplicates,
                    queued=result.total,
                    refused=len(refused),
                )
            if self.stopping.is_set():
                return chunks
            cursor = await conn.execute(
                "SELECT count(*) FROM marketing.delivery_message WHERE delivery_id = %s "
                "AND status = 'failed_hard' AND starts_with(failure_reason, %s)",
                (delivery_id, marketing.REFUSED),
            )
            queued = total - int((await cursor.fetchone() or (0,))[0])
            try:
                info = await client.complete(mid_id, queued)
            except MidError as exc:
                if exc.error == "incomplete_push":
                    log.warning("mid server misses messages: pushing again", delivery=delivery_id)
                    await marketing.rewind_push(conn, delivery_id)
                raise
            await marketing.push_completed(conn, delivery_id, info.state.value)
            log.info("delivery pushed", delivery=delivery_id, mid_delivery=mid_id, total=total)
        except MidError as exc:
            await self._failed(conn, delivery_id, account, exc)
        return chunks

    # pull --------------------------------------------------------------------------------

    async def pull_once(self, conn: psycopg.AsyncConnection) -> int:
        """Pull the status changes of every delivery being sent; the changes applied."""
        cursor = await conn.execute(
            "SELECT d.id, d.mid_delivery_id, d.status_cursor, t.external_account, d.state::text "
            "FROM marketing.delivery d JOIN marketing.delivery_template t ON t.id = d.template_id "
            "WHERE d.mid_delivery_id IS NOT NULL AND (d.state IN ('pushing', 'pushed') "
            "OR (d.state = 'cancelled' AND d.to_send + d.sent > 0)) ORDER BY d.id"
        )
        applied = 0
        lags: dict[str, float] = {}
        for delivery_id, mid_id, status_cursor, account, state in await cursor.fetchall():
            if self.stopping.is_set():
                break
            try:
                pulled = await self.pull_delivery(conn, delivery_id, mid_id, status_cursor, account)
            except MidError as exc:
                log.warning("pull failed", delivery=delivery_id, account=account, error=str(exc))
                continue
            applied += pulled.applied
            lags[account] = max(lags.get(account, 0.0), pulled.lag)
            final_there = pulled.mid_state in ("done", "cancelled")
            to_send, sent = await self._kpis(conn, delivery_id, final_there)
            # `done` on the mid side says every message is final there, not that this side
            # has pulled every change: a change committed while an older transaction still
            # ran is held back by the pull (pg_snapshot_xmin) until a later page, so the
            # delivery ends only when no message is left to send or sent here either
            finished = final_there and to_send + sent == 0
            if (state == "pushed" and finished) or (state == "cancelled" and to_send + sent == 0):
                # the delivery is not pulled any more after this: send its last cursor back
                # first, or the mid side keeps its last page as unpulled (delivery_sync)
                # and the SMS process's purge of broad_log never removes those messages
                try:
                    acknowledged, more = await self.acknowledge(
                        conn, delivery_id, mid_id, pulled, account
                    )
                except MidError as exc:
                    log.warning(
                        "acknowledging the last page failed",
                        delivery=delivery_id,
                        account=account,
                        error=str(exc),
                    )
                    continue
                applied += more
                if more:
                    to_send, sent = await self._kpis(conn, delivery_id, True)
                if not acknowledged or to_send + sent:
                    continue  # changes kept coming: a next pull ends it
                await marketing.pull_finished(conn, delivery_id)
        for account, lag in lags.items():
            obs.MKT_SYNC_LAG.labels(account).set(lag)
        return applied

    async def _kpis(
        self, conn: psycopg.AsyncConnection, delivery_id: int, now: bool
    ) -> tuple[int, int]:
        """Recompute a delivery's KPIs after a pull; (to_send, sent).

        Counting costs time in proportion to the delivery (about 0.3 s of PostgreSQL CPU
        at 500,000 messages): counted at every pull, a big delivery's KPIs made the cost
        grow with the square of its size (bench/e2e.py). So a delivery is counted again
        only RECOUNT_AFTER times as long after its last count as that count took, which
        bounds counting to about 1/RECOUNT_AFTER of a core per delivery; at once when
        `now` (the mid side says every message is final).
        """
        at = asyncio.get_running_loop().time()
        last = self._counted.get(delivery_id)
        if last is not None and not now and at - last[0] < last[1] * RECOUNT_AFTER:
            return last[2]
        to_send, sent = await marketing.recompute_kpis(conn, delivery_id)
        took = asyncio.get_running_loop().time() - at
        if len(self._counted) > 1000:
            self._counted.clear()
        self._counted[delivery_id] = (at, took, (to_send, sent))
        return to_send, sent

    async def acknowledge(
        self,
        conn: psycopg.AsyncConnection,
        delivery_id: int,
        mid_id: int,
        pulled: PullResult,
        account: str,
        attempts: int = 3,
    ) -> tuple[bool, int]:
        """Send a delivery's last cursor back to the mid server, which records it as pulled.

        A pull from a cursor acknowledges what came before it, so the cursor of the last
        page is acknowledged only by one more pull from it. Changes found by that pull are
        applied as any (a late commit); then their cursor is sent back in turn, up to
        `attempts` pulls. Returns (acknowledged, changes applied).
        """
        applied = 0
        for _ in range(attempts):
            if pulled.acknowledged:
                return True, applied
            pulled = await self.pull_delivery(
                conn, delivery_id, mid_id, pulled.cursor, account, page_size=1
            )
            applied += pulled.applied
        return pulled.acknowledged, applied

    async def pull_delivery(
        self,
        conn: psycopg.AsyncConnection,
        delivery_id: int,
        mid_id: int,
        status_cursor: str,
        account: str,
        max_pages: int = 100,
        page_size: int | None = None,
    ) -> PullResult:
        """Pull pages of a delivery's changes from `status_cursor` while there are more."""
        client = self.client(account)
        applied, lag, mid_state = 0, 0.0, ""
        acknowledged = False
        for _ in range(max_pages):
            page = await client.statuses(
                mid_id, status_cursor, page_size or self.settings.pull_page_size
            )
            # the pull from a cursor acknowledges it; the page's own cursor is not yet
            acknowledged = page.cursor == status_cursor
            changes = await marketing.page_pulled(
                conn, delivery_id, page.changes, page.cursor, page.state.value
            )
            applied += changes
            obs.MKT_STATUS_CHANGES.labels(account).inc(changes)
            status_cursor, lag, mid_state = page.cursor, page.lag_seconds, page.state.value
            if not page.more:
                break
        return PullResult(applied, lag, mid_state, status_cursor, acknowledged)

    # running -----------------------------------------------------------------------------

    async def _loop(self, name: str, interval: float, step: Any) -> None:
        """Run `step` every `interval` on a connection of its own, until stopping. A lost
        database is logged once an outage (`midsourcing.db_lost` / `db_back`, password
        masked) and the connection opened again at the next interval."""
        conn: psycopg.AsyncConnection | None = None
        outage = Outage(
            name,
            dsn_password(self.dsn),
            event_prefix="midsourcing",
            backoff=Backoff(interval, interval),
            logger=log,
        )
        while not self.stopping.is_set():
            wait = interval
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                await step(conn)
                outage.recovered()
            except psycopg.OperationalError as exc:
                wait = outage.failed(exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
            except Exception:
                log.exception(f"{name} loop failed; going on")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), wait)
        if conn is not None:
            await conn.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await marketing.sync_templates(conn, self.config)
        log.info(
            "marketing service running",
            accounts=[a.name for a in self.config.accounts],
            templates=[t.name for t in self.config.templates],
        )
        tasks = [
            asyncio.create_task(self._loop("push", self.settings.push_interval, self.push_once)),
            asyncio.create_task(self._loop("pull", self.settings.pull_interval, self.pull_once)),
        ]
        systemd = Notifier()
        systemd.ready(f"{len(self.config.accounts)} account(s)")
        watchdog = asyncio.create_task(keep_alive(systemd))
        await self.stopping.wait()
        systemd.stopping()
        watchdog.cancel()
        log.info("marketing service stopping")
        _done, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
        for task in pending:
            task.cancel()
        await self.aclose()
        return 0


def run(config: MarketingConfig, dsn: str) -> int:
    import uvloop

    obs.serve_metrics(config.marketing.metrics_host, config.marketing.metrics_port)
    return uvloop.run(Service(config, dsn).run())
