"""The marketing side's schema: recipients, templates, deliveries, and every write to it.

This module alone writes the `marketing` schema (tests/test_architecture.py): the commands
(midsourcing.commands) and the service's push and pull loops (midsourcing.marketing_service)
change it through the functions here, each one statement or one transaction. The marketing
side keeps its own schema and can live on another database than the mid side.

Templates live in the marketing YAML (`templates:`), next to the accounts they route
through: they are configuration that is reviewed and versioned with those accounts and
validated at load with the file's errors. `sync_templates()` copies them into
`marketing.delivery_template` (upsert by internal name) so that each delivery refers to
a row and keeps its template after the file changes.

`create_delivery()` upserts the CSV's recipients by mobile number and creates one
`delivery_message` per kept row (its id is the marketing message id the mid server
stores), all set-based through COPY into temporary tables; the delivery starts in state
`pushing`.

A pushed chunk's refused numbers (422 `rejected_numbers`) become `failed_hard` with the
reason (`REFUSED` prefix) in the same transaction as the push cursor (`chunk_pushed()`). A
pulled page's changes and its cursor are applied in one transaction (`page_pulled()`, the
mid statuses mapped by `MID_TO_MARKETING`); KPIs (to send, sent, delivered, failed hard /
soft, cancelled, and failures by error) are recomputed from the per-message statuses
(`recompute_kpis()`). `cancel_local()` cancels on this side: messages not pushed yet end
as cancelled.

Touches: the marketing schema and the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import structlog

from midsourcing.recipients import Recipients, read_csv
from midsourcing.schemas import SmsOptions, StatusChange, TransmissionMode
from smsmta.settings import DeliveryTemplate, MarketingConfig

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
        created = await cursor.fetchone()
        assert created is not None
        delivery_id = int(created[0])
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


# --- the push loop's writes (midsourcing.marketing_service) -----------------------------


async def set_validity_end(
    conn: psycopg.AsyncConnection, delivery_id: int, validity_end: datetime
) -> None:
    """Fix the end of validity of a delivery before it is created on the mid server."""
    await conn.execute(
        "UPDATE marketing.delivery SET validity_end = %s WHERE id = %s",
        (validity_end, delivery_id),
    )


async def set_mid_delivery(
    conn: psycopg.AsyncConnection, delivery_id: int, mid_id: int, mid_state: str
) -> None:
    """Record the mid server's delivery (its id and state) once created there."""
    await conn.execute(
        "UPDATE marketing.delivery SET mid_delivery_id = %s, mid_state = %s WHERE id = %s",
        (mid_id, mid_state, delivery_id),
    )


async def chunk_pushed(
    conn: psycopg.AsyncConnection, delivery_id: int, push_cursor: int, refused: dict[int, str]
) -> None:
    """A chunk the mid server acknowledged: its refused messages (id -> reason) fail hard
    with the REFUSED prefix and the cursor moves past it, in one transaction; the push's
    failures in a row start again from zero."""
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


async def rewind_push(conn: psycopg.AsyncConnection, delivery_id: int) -> None:
    """Push the delivery again from its first message (the mid server misses some)."""
    await conn.execute(
        "UPDATE marketing.delivery SET push_cursor = 0 WHERE id = %s",
        (delivery_id,),
    )


async def push_completed(conn: psycopg.AsyncConnection, delivery_id: int, mid_state: str) -> None:
    """The mid server holds every message: a `pushing` delivery becomes `pushed`."""
    await conn.execute(
        "UPDATE marketing.delivery SET state = 'pushed', pushed_at = now(), "
        "mid_state = %s, push_error = NULL, updated_at = now() "
        "WHERE id = %s AND state = 'pushing'",
        (mid_state, delivery_id),
    )


async def push_failed(conn: psycopg.AsyncConnection, delivery_id: int, error: str) -> int:
    """Count a failed push and keep its error; the failures in a row so far."""
    cursor = await conn.execute(
        "UPDATE marketing.delivery SET push_attempts = push_attempts + 1, push_error = %s, "
        "updated_at = now() WHERE id = %s RETURNING push_attempts",
        (error, delivery_id),
    )
    return int((await cursor.fetchone() or (1,))[0])


async def retry_push_in(conn: psycopg.AsyncConnection, delivery_id: int, delay: float) -> None:
    """Push the delivery again no sooner than `delay` seconds from now."""
    await conn.execute(
        "UPDATE marketing.delivery SET next_push_at = now() + make_interval(secs => %s) "
        "WHERE id = %s",
        (delay, delivery_id),
    )


# --- the pull loop's writes (midsourcing.marketing_service) -----------------------------


async def page_pulled(
    conn: psycopg.AsyncConnection,
    delivery_id: int,
    changes: Iterable[StatusChange],
    cursor: str,
    mid_state: str,
) -> int:
    """Apply a page of status changes, its cursor and the mid state in one transaction;
    the changes applied."""
    ids, statuses, reasons = [], [], []
    for change in changes:
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
            (cursor, mid_state, delivery_id),
        )
    return len(ids)


async def pull_finished(conn: psycopg.AsyncConnection, delivery_id: int) -> None:
    """A delivery with nothing left to pull: `pushed` becomes `done` (`cancelled` stays)."""
    await conn.execute(
        "UPDATE marketing.delivery SET state = CASE WHEN state = 'pushed' "
        "THEN 'done'::marketing.delivery_state ELSE state END, updated_at = now() "
        "WHERE id = %s",
        (delivery_id,),
    )
