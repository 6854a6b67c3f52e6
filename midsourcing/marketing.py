"""The marketing service: recipients, templates, deliveries, and the push and pull loops.

Templates live in the marketing YAML (`templates:`), next to the accounts they route
through: they are configuration that is reviewed and versioned with those accounts and
validated at load with the file's errors. `sync_templates()` copies them into
`marketing.delivery_template` (upsert by internal name) so that each delivery refers to
a row and keeps its template after the file changes.

`create_delivery()` upserts the CSV's recipients by mobile number and creates one
`delivery_message` per kept row (its id is the marketing message id the mid server
stores), all set-based through COPY into temporary tables; the delivery starts in state
`pushing`.

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
last page is sent back by one more pull (`acknowledge`). Touches: the marketing schema, the mid API
(through midsourcing.client), metrics and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import structlog

from midsourcing.client import MidClient, MidError, RejectedNumbers
from midsourcing.recipients import Recipients, read_csv
from midsourcing.schemas import DeliveryCreate, Message, SmsOptions, TransmissionMode
from smsmta import obs
from smsmta.settings import DeliveryTemplate, MarketingConfig
from smsmta.systemd import Notifier, keep_alive

log = structlog.get_logger("midsourcing.marketing")

MID_TO_MARKETING = {
    "pending": "to_send",
    "sending": "to_send",
    "sent": "sent",
    "delivered": "delivered",
    "cancelled": "cancelled",
    "no_receipt": "no_receipt",
}


REFUSED = "refused by the mid server: "
"""failure_reason prefix of a message whose number the mid server could not canonicalise
at the push (it never reached the queue, so the complete count leaves it out)."""


class MarketingError(ValueError):
    """A marketing command that cannot be done; the message says why."""


# --- templates --------------------------------------------------------------------------

UPSERT_TEMPLATE = """
INSERT INTO marketing.delivery_template (internal_name, label, external_account, source_addr,
    max_parts, transmission_mode, validity_seconds, priority, service_type, service_id)
VALUES (%(name)s, %(label)s, %(account)s, %(source_addr)s, %(max_parts)s,
        %(transmission_mode)s, %(validity)s, %(priority)s, %(service_type)s, %(service_id)s)
ON CONFLICT (internal_name) DO UPDATE SET label = EXCLUDED.label,
    external_account = EXCLUDED.external_account, source_addr = EXCLUDED.source_addr,
    max_parts = EXCLUDED.max_parts, transmission_mode = EXCLUDED.transmission_mode,
    validity_seconds = EXCLUDED.validity_seconds, priority = EXCLUDED.priority,
    service_type = EXCLUDED.service_type, service_id = EXCLUDED.service_id, updated_at = now()
RETURNING id
"""


async def sync_templates(conn: psycopg.AsyncConnection, config: MarketingConfig) -> dict[str, int]:
    """Upsert the file's templates; internal name -> id."""
    ids: dict[str, int] = {}
    async with conn.transaction():
        for t in config.templates:
            cursor = await conn.execute(
                UPSERT_TEMPLATE,
                {
                    "name": t.name,
                    "label": t.label or t.name,
                    "account": t.account,
                    "source_addr": t.source_addr,
                    "max_parts": t.max_parts,
                    "transmission_mode": t.transmission_mode.value if t.transmission_mode else None,
                    "validity": int(t.validity) if t.validity else None,
                    "priority": t.priority,
                    "service_type": t.service_type,
                    "service_id": t.service_id,
                },
            )
            row = await cursor.fetchone()
            assert row is not None
            ids[t.name] = int(row[0])
    return ids


def template_options(template: DeliveryTemplate, validity_end: datetime | None) -> SmsOptions:
    return SmsOptions(
        source_addr=template.source_addr,
        max_parts=template.max_parts,
        transmission_mode=TransmissionMode(template.transmission_mode.value)
        if template.transmission_mode
        else None,
        validity_end=validity_end,
        priority=template.priority,
        service_type=template.service_type,
        service_id=template.service_id,
    )


def find_template(config: MarketingConfig, name: str) -> DeliveryTemplate:
    try:
        return config.template(name)
    except KeyError:
        names = ", ".join(t.name for t in config.templates) or "none"
        raise MarketingError(f"no template {name!r} in the settings (templates: {names})") from None


# --- creating a delivery ------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    delivery_id: int
    recipients: Recipients


RECIPIENT_TABLE = """
CREATE TEMP TABLE new_recipient (
    line integer, mobile text, first_name text, last_name text, fields jsonb, text text
) ON COMMIT DROP
"""
UPSERT_RECIPIENTS = """
INSERT INTO marketing.recipient (mobile, first_name, last_name, fields)
SELECT mobile, first_name, last_name, fields FROM new_recipient ORDER BY line
ON CONFLICT (mobile) DO UPDATE SET first_name = EXCLUDED.first_name,
    last_name = EXCLUDED.last_name, fields = EXCLUDED.fields
"""
INSERT_MESSAGES = """
INSERT INTO marketing.delivery_message (delivery_id, recipient_id, address, text)
SELECT %s, r.id, n.mobile, n.text
FROM new_recipient n JOIN marketing.recipient r ON r.mobile = n.mobile
ORDER BY n.line
"""


async def create_delivery(
    conn: psycopg.AsyncConnection,
    config: MarketingConfig,
    template_name: str,
    csv_path: str | Path,
    text: str,
    label: str = "",
) -> Created:
    """Create a delivery from a CSV file; rows with errors are left out (see `recipients`)."""
    template = find_template(config, template_name)
    country = config.account(template.account).default_country
    recipients = read_csv(csv_path, text, country)
    if not recipients.rows:
        raise MarketingError(
            f"no valid recipient in {csv_path}: "
            + ("; ".join(str(r) for r in recipients.rejected[:5]) or "the file has no rows")
        )
    template_ids = await sync_templates(conn, config)
    async with conn.transaction():
        await conn.execute(RECIPIENT_TABLE)
        async with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY new_recipient (line, mobile, first_name, last_name, fields, text) FROM STDIN"
            ) as copy,
        ):
            for row in recipients.rows:
                await copy.write_row(
                    (
                        row.line,
                        row.mobile,
                        row.first_name[:255],
                        row.last_name[:255],
                        json.dumps(row.fields, ensure_ascii=False),
                        row.text,
                    )
                )
        await conn.execute(UPSERT_RECIPIENTS)
        cursor = await conn.execute(
            "INSERT INTO marketing.delivery (template_id, label, text, state, total, rejected, "
            "to_send) VALUES (%s, %s, %s, 'pushing', %s, %s, %s) RETURNING id",
            (
                template_ids[template.name],
                label[:255],
                text,
                len(recipients.rows),
                len(recipients.rejected),
                len(recipients.rows),
            ),
        )
        row = await cursor.fetchone()
        assert row is not None
        delivery_id = int(row[0])
        await conn.execute(INSERT_MESSAGES, (delivery_id,))
    log.info(
        "delivery created",
        delivery=delivery_id,
        template=template.name,
        recipients=len(recipients.rows),
        rejected=len(recipients.rejected),
    )
    return Created(delivery_id, recipients)


# --- reading deliveries ---------------------------------------------------------------------

KPI_COLUMNS = (
    "to_send", "sent", "delivered", "failed_hard", "failed_soft", "cancelled", "no_receipt",
)  # fmt: skip
RECOUNT_AFTER = 10.0  # see Service._kpis


async def list_deliveries(conn: psycopg.AsyncConnection, limit: int = 50) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT d.id, d.label, t.internal_name, t.external_account, d.state::text, d.total, "
        "d.rejected, d.mid_delivery_id, d.to_send, d.sent, d.delivered, d.failed_hard, "
        "d.failed_soft, d.cancelled, d.no_receipt, d.created_at, d.push_error "
        "FROM marketing.delivery d JOIN marketing.delivery_template t ON t.id = d.template_id "
        "ORDER BY d.id DESC LIMIT %s",
        (limit,),
    )
    names = (
        "id", "label", "template", "account", "state", "total", "rejected", "mid_delivery_id",
        *KPI_COLUMNS, "created_at", "push_error",
    )  # fmt: skip
    return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


async def delivery_status(conn: psycopg.AsyncConnection, delivery_id: int) -> dict[str, Any]:
    cursor = await conn.execute(
        "SELECT d.id, d.label, t.internal_name, t.external_account, d.state::text, d.total, "
        "d.rejected, d.mid_delivery_id, d.mid_state, d.to_send, d.sent, d.delivered, "
        "d.failed_hard, d.failed_soft, d.cancelled, d.no_receipt, d.push_cursor, d.push_error, "
        "d.pushed_at, "
        "d.last_pull_at, d.created_at "
        "FROM marketing.delivery d JOIN marketing.delivery_template t ON t.id = d.template_id "
        "WHERE d.id = %s",
        (delivery_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise MarketingError(f"no delivery {delivery_id}")
    names = (
        "id", "label", "template", "account", "state", "total", "rejected", "mid_delivery_id",
        "mid_state", *KPI_COLUMNS, "push_cursor", "push_error", "pushed_at", "last_pull_at",
        "created_at",
    )  # fmt: skip
    status = dict(zip(names, row, strict=True))
    status["processed"] = sum(
        status[k] for k in ("delivered", "failed_hard", "failed_soft", "no_receipt")
    )
    errors = await conn.execute(
        "SELECT error, failure_type, count FROM marketing.delivery_error WHERE delivery_id = %s "
        "ORDER BY count DESC, error",
        (delivery_id,),
    )
    status["errors"] = [
        {"error": e, "failure_type": f, "count": c} for e, f, c in await errors.fetchall()
    ]
    for key in ("pushed_at", "last_pull_at", "created_at"):
        if status[key] is not None:
            status[key] = status[key].isoformat()
    return status


async def delivery_account(
    conn: psycopg.AsyncConnection, delivery_id: int
) -> tuple[str, int | None, str]:
    """(marketing account, mid delivery id, state) of a delivery."""
    cursor = await conn.execute(
        "SELECT t.external_account, d.mid_delivery_id, d.state::text FROM marketing.delivery d "
        "JOIN marketing.delivery_template t ON t.id = d.template_id WHERE d.id = %s",
        (delivery_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise MarketingError(f"no delivery {delivery_id}")
    return row[0], row[1], row[2]


RECOMPUTE_KPIS = """
UPDATE marketing.delivery d SET
    to_send = k.to_send, sent = k.sent, delivered = k.delivered, failed_hard = k.failed_hard,
    failed_soft = k.failed_soft, cancelled = k.cancelled, no_receipt = k.no_receipt,
    updated_at = now()
FROM (
    SELECT count(*) FILTER (WHERE status = 'to_send') AS to_send,
           count(*) FILTER (WHERE status = 'sent') AS sent,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'failed_hard') AS failed_hard,
           count(*) FILTER (WHERE status = 'failed_soft') AS failed_soft,
           count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE status = 'no_receipt') AS no_receipt
    FROM marketing.delivery_message WHERE delivery_id = %(id)s
) k
WHERE d.id = %(id)s
RETURNING d.to_send, d.sent
"""
RECOMPUTE_ERRORS = """
INSERT INTO marketing.delivery_error (delivery_id, error, failure_type, count)
SELECT %(id)s, coalesce(failure_reason, '(no reason given)'),
       CASE WHEN status = 'failed_soft' THEN 'soft' ELSE 'hard' END, count(*)
FROM marketing.delivery_message
WHERE delivery_id = %(id)s AND status IN ('failed_hard', 'failed_soft')
GROUP BY 2, 3
ON CONFLICT (delivery_id, error) DO UPDATE
SET failure_type = EXCLUDED.failure_type, count = EXCLUDED.count
"""


async def recompute_kpis(conn: psycopg.AsyncConnection, delivery_id: int) -> tuple[int, int]:
    """KPIs from the per-message statuses; returns (to_send, sent)."""
    async with conn.transaction():
        cursor = await conn.execute(RECOMPUTE_KPIS, {"id": delivery_id})
        row = await cursor.fetchone()
        await conn.execute(
            "DELETE FROM marketing.delivery_error WHERE delivery_id = %s", (delivery_id,)
        )
        await conn.execute(RECOMPUTE_ERRORS, {"id": delivery_id})
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def cancel_local(conn: psycopg.AsyncConnection, delivery_id: int) -> None:
    """Cancel a delivery on this side: messages not pushed yet end as cancelled."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE marketing.delivery SET state = 'cancelled', updated_at = now() "
            "WHERE id = %s AND state NOT IN ('done', 'cancelled')",
            (delivery_id,),
        )
        await conn.execute(
            "UPDATE marketing.delivery_message m SET status = 'cancelled', updated_at = now() "
            "FROM marketing.delivery d WHERE d.id = m.delivery_id AND m.delivery_id = %s "
            "AND m.status = 'to_send' AND m.id > d.push_cursor",
            (delivery_id,),
        )
    await recompute_kpis(conn, delivery_id)


# --- the push loop -----------------------------------------------------------------------


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
    return float(min(maximum, initial * 2 ** max(0, attempts - 1)))


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
        cursor = await conn.execute(
            "UPDATE marketing.delivery SET push_attempts = push_attempts + 1, push_error = %s, "
            "updated_at = now() WHERE id = %s RETURNING push_attempts",
            (str(exc), delivery_id),
        )
        attempts = int((await cursor.fetchone() or (1,))[0])
        s = self.settings
        delay = backoff(attempts, s.retry_initial, s.retry_max) if exc.retryable else s.retry_max
        await conn.execute(
            "UPDATE marketing.delivery SET next_push_at = now() + make_interval(secs => %s) "
            "WHERE id = %s",
            (delay, delivery_id),
        )
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
                    await conn.execute(
                        "UPDATE marketing.delivery SET validity_end = %s WHERE id = %s",
                        (validity_end, delivery_id),
                    )
                info = await client.create_delivery(
                    DeliveryCreate(
                        marketing_account=account,
                        marketing_delivery_id=str(delivery_id),
                        label=label,
                        options=template_options(template, validity_end),
                    )
                )
                mid_id = info.id
                await conn.execute(
                    "UPDATE marketing.delivery SET mid_delivery_id = %s, mid_state = %s "
                    "WHERE id = %s",
                    (mid_id, info.state.value, delivery_id),
                )
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
                async with conn.transaction():
                    if refused:
                        await conn.execute(
                            "UPDATE marketing.delivery_message m SET status = 'failed_hard', "
                            "failure_reason = %s || v.reason, updated_at = now() "
                            "FROM unnest(%s::bigint[], %s::text[]) AS v(id, reason) "
                            "WHERE m.id = v.id AND m.delivery_id = %s",
                            (REFUSED, list(refused), list(refused.values()), delivery_id),
                        )
                    await conn.execute(
                        "UPDATE marketing.delivery SET push_cursor = %s, push_attempts = 0, "
                        "push_error = NULL, next_push_at = NULL, updated_at = now() "
                        "WHERE id = %s",
                        (push_cursor, delivery_id),
                    )
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
                (delivery_id, REFUSED),
            )
            queued = total - int((await cursor.fetchone() or (0,))[0])
            try:
                info = await client.complete(mid_id, queued)
            except MidError as exc:
                if exc.error == "incomplete_push":
                    log.warning("mid server misses messages: pushing again", delivery=delivery_id)
                    await conn.execute(
                        "UPDATE marketing.delivery SET push_cursor = 0 WHERE id = %s",
                        (delivery_id,),
                    )
                raise
            await conn.execute(
                "UPDATE marketing.delivery SET state = 'pushed', pushed_at = now(), "
                "mid_state = %s, push_error = NULL, updated_at = now() "
                "WHERE id = %s AND state = 'pushing'",
                (info.state.value, delivery_id),
            )
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
                await conn.execute(
                    "UPDATE marketing.delivery SET state = CASE WHEN state = 'pushed' "
                    "THEN 'done'::marketing.delivery_state ELSE state END, updated_at = now() "
                    "WHERE id = %s",
                    (delivery_id,),
                )
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
        to_send, sent = await recompute_kpis(conn, delivery_id)
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
            ids, statuses, reasons = [], [], []
            for change in page.changes:
                if change.status == "failed":
                    status = "failed_soft" if change.failure_type == "soft" else "failed_hard"
                else:
                    status = MID_TO_MARKETING[change.status.value]
                ids.append(change.id)
                statuses.append(status)
                reasons.append(change.failure_reason)
            async with conn.transaction():
                if ids:
                    await conn.execute(
                        "UPDATE marketing.delivery_message m SET status = "
                        "v.status::marketing.message_status, failure_reason = v.reason, "
                        "updated_at = now() "
                        "FROM unnest(%s::bigint[], %s::text[], %s::text[]) "
                        "AS v(id, status, reason) "
                        "WHERE m.id = v.id AND m.delivery_id = %s",
                        (ids, statuses, reasons, delivery_id),
                    )
                await conn.execute(
                    "UPDATE marketing.delivery SET status_cursor = %s, mid_state = %s, "
                    "last_pull_at = now() WHERE id = %s",
                    (page.cursor, page.state.value, delivery_id),
                )
            applied += len(ids)
            obs.MKT_STATUS_CHANGES.labels(account).inc(len(ids))
            status_cursor, lag, mid_state = page.cursor, page.lag_seconds, page.state.value
            if not page.more:
                break
        return PullResult(applied, lag, mid_state, status_cursor, acknowledged)

    # running -----------------------------------------------------------------------------

    async def _loop(self, name: str, interval: float, step: Any) -> None:
        conn: psycopg.AsyncConnection | None = None
        while not self.stopping.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                await step(conn)
            except psycopg.OperationalError as exc:
                log.warning(f"{name} loop: database unavailable", error=str(exc))
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = None
            except Exception:
                log.exception(f"{name} loop failed; going on")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), interval)
        if conn is not None:
            await conn.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await sync_templates(conn, self.config)
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
