"""Routes of deliveries: preview, create, read, push chunks, complete, pause/resume/cancel,
pull statuses.

An operator sees only its own deliveries: another operator's is answered 404 like one that
does not exist. A delivery goes to the mid account `<operator login>_<marketing account>`
(`resolve`). A pushed chunk has its numbers put in the canonical form first
(`canonical_rows`): the rows whose number cannot be are refused alone (422
`rejected_numbers`, with the counts of the rest, which is queued). Every route needs the
ADMINISTRATION right (checked by the API's gate first).
Touches: the mid schema through midsourcing.store (deliveries, the queue); log; metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated, TypeVar

import psycopg
import structlog
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from midsourcing import auth, store
from midsourcing.preview import preview
from midsourcing.routers.deps import Admin, Conn, DeliveryId, MidApi, State
from midsourcing.routers.errors import PROBLEMS, ApiError
from midsourcing.schemas import (
    Chunk,
    ChunkResult,
    DeliveryCreate,
    DeliveryInfo,
    DeliveryState,
    PreviewRequest,
    PreviewResponse,
    PushComplete,
    StatusPage,
)
from smsmta import obs
from smsmta.accounts import sync_accounts
from smsmta.numbers import NumberError, canonical
from smsmta.settings import Account

log = structlog.get_logger("midsourcing.api")

T = TypeVar("T")

router = APIRouter(tags=["deliveries"], responses=PROBLEMS)


def canonical_rows(
    chunk: Chunk, default_country: str
) -> tuple[list[tuple[int, str, str]], list[dict[str, object]]]:
    """(rows to queue with their number in the canonical form, the rows refused).

    Each refusal names the row (`recipient_index`, the marketing `message_id`) and why;
    the canonical form (`+` and at most 15 digits) always fits SMPP's destination_addr.
    """
    rows: list[tuple[int, str, str]] = []
    refused: list[dict[str, object]] = []
    for index, message in enumerate(chunk.messages):
        try:
            to = canonical(message.to, default_country=default_country)
        except NumberError as exc:
            refused.append(
                {
                    "where": f"body.messages[{index}].to",
                    "message": f"{message.to!r} is not a mobile number: {exc}",
                    "reason": str(exc),
                    "type": "invalid_number",
                    "recipient_index": index,
                    "message_id": message.id,
                }
            )
            continue
        rows.append((message.id, to, message.text))
    return rows, refused


def resolve(api: MidApi, operator: auth.OperatorRecord, marketing_account: str) -> Account:
    """The enabled mid account of `operator` for `marketing_account`; ApiError 422 otherwise."""
    expected = f"{operator.login}_{marketing_account}"
    account = api.accounts.get(expected)
    if account is None or not account.enabled or account.operator != operator.login:
        # another operator's account is reported as missing: nothing tells it exists
        mine = account is not None and account.operator == operator.login
        state = "is disabled" if mine else "does not exist"
        raise ApiError(
            422,
            "unknown_account",
            f"no enabled mid account {expected!r}: operator {operator.login!r} with "
            f"marketing account {marketing_account!r} routes to the mid external account "
            f"named {expected!r}, which {state} on this mid server",
            errors=[{"where": "body.marketing_account", "expected_account": expected}],
        )
    return account


async def delivery_info(conn: psycopg.AsyncConnection, row: store.DeliveryRow) -> DeliveryInfo:
    return DeliveryInfo(
        id=row.id,
        account=row.account,
        marketing_delivery_id=row.marketing_delivery_id,
        label=row.label,
        state=DeliveryState(row.state),
        options=row.options,
        push_complete=row.push_complete,
        counters=await store.counters(conn, row.id),
    )


async def owned(call: Awaitable[T | None], delivery_id: int, conflict: str = "conflict") -> T:
    """What a store call on a delivery of the operator gives: 404 when the delivery is not
    the operator's (or does not exist), 409 `conflict` when its state forbids the call."""
    try:
        result = await call
    except store.Conflict as exc:
        raise ApiError(409, conflict, str(exc)) from None
    if result is None:
        raise ApiError(404, "not_found", f"no delivery {delivery_id} for this operator")
    return result


@router.post("/api/v1/preview", response_model=PreviewResponse)
async def preview_texts(request: PreviewRequest, operator: Admin, api: State) -> PreviewResponse:
    """What the phone gets: encoding, parts, transliteration and sender, per text."""
    account = resolve(api, operator, request.marketing_account)
    return preview(account, request.options, request.texts)


@router.post(
    "/api/v1/deliveries",
    response_model=DeliveryInfo,
    status_code=201,
    responses={200: {"model": DeliveryInfo, "description": "the delivery existed already"}},
)
async def create_delivery(
    request: DeliveryCreate, operator: Admin, conn: Conn, api: State
) -> JSONResponse:
    """Create a delivery (idempotent on marketing account + marketing delivery id)."""
    account = resolve(api, operator, request.marketing_account)
    account_id = await store.account_id(conn, account.name)
    if account_id is None:  # in the file but not synced: sync now
        account_id = (await sync_accounts(conn, api.config))[account.name]
    row, created = await store.create(conn, account_id, operator.login, request)
    info = await delivery_info(conn, row)
    if created:
        log.info("delivery created", delivery=row.id, account=account.name)
    return JSONResponse(info.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/api/v1/deliveries/{delivery_id}", response_model=DeliveryInfo)
async def get_delivery(delivery_id: DeliveryId, operator: Admin, conn: Conn) -> DeliveryInfo:
    row = await owned(store.get_delivery(conn, delivery_id, operator.login), delivery_id)
    return await delivery_info(conn, row)


@router.post("/api/v1/deliveries/{delivery_id}/messages", response_model=ChunkResult)
async def push_messages(
    delivery_id: DeliveryId, chunk: Chunk, operator: Admin, conn: Conn, api: State
) -> ChunkResult:
    """Queue a chunk of up to 10,000 messages; a message already queued is skipped.

    Each number is put in its canonical form (E.164, national numbers read with the
    account's default_country). A row whose number cannot be is refused alone: the
    rest of the chunk is queued and the answer is 422 `rejected_numbers`, naming each
    refused row (index, marketing message id, why), with the `chunk` counts of the
    rest. Pushed again, the chunk gives the same answer and queues nothing twice.
    """
    row = await owned(store.get_delivery(conn, delivery_id, operator.login), delivery_id)
    account = api.accounts.get(row.account)
    rows, refused = canonical_rows(chunk, account.default_country if account else "")
    pushed = store.push_chunk(conn, delivery_id, operator.login, rows)
    received, inserted, total, account_name = await owned(pushed, delivery_id)
    obs.MID_PUSHED_CHUNKS.labels(account_name).inc()
    obs.MID_PUSHED_MESSAGES.labels(account_name, "inserted").inc(inserted)
    obs.MID_PUSHED_MESSAGES.labels(account_name, "duplicate").inc(received - inserted)
    obs.MID_PUSHED_MESSAGES.labels(account_name, "refused").inc(len(refused))
    log.info(
        "chunk queued",
        delivery=delivery_id,
        received=received,
        inserted=inserted,
        total=total,
        refused=len(refused),
    )
    result = ChunkResult(
        received=received, inserted=inserted, duplicates=received - inserted, total=total
    )
    if refused:
        first = refused[0]
        raise ApiError(
            422,
            "rejected_numbers",
            f"{first['where']}: {first['message']}"
            + (f" (and {len(refused) - 1} more)" if len(refused) > 1 else "")
            + f"; the other {received} messages of the chunk are queued",
            errors=refused,
            chunk=result,
        )
    return result


@router.post("/api/v1/deliveries/{delivery_id}/complete", response_model=DeliveryInfo)
async def complete(
    delivery_id: DeliveryId, body: PushComplete, operator: Admin, conn: Conn
) -> DeliveryInfo:
    """Declare every chunk pushed; refused (409) when the queue does not hold `total`."""
    completed = store.complete_push(conn, delivery_id, operator.login, body.total)
    row = await owned(completed, delivery_id, conflict="incomplete_push")
    return await delivery_info(conn, row)


def _state_route(action: str, doc: str) -> None:
    """POST /api/v1/deliveries/{delivery_id}/<action>, named `<action>_delivery`."""

    async def change(delivery_id: DeliveryId, operator: Admin, conn: Conn) -> DeliveryInfo:
        changed = store.change_state(conn, delivery_id, operator.login, action)
        row = await owned(changed, delivery_id)
        log.info("delivery state changed", delivery=delivery_id, action=action)
        return await delivery_info(conn, row)

    change.__doc__ = doc
    router.post(
        f"/api/v1/deliveries/{{delivery_id}}/{action}",
        response_model=DeliveryInfo,
        name=f"{action}_delivery",
    )(change)


_state_route("pause", "Pause: messages not claimed yet wait; claimed ones finish.")
_state_route("resume", "Resume a paused delivery.")
_state_route("cancel", "Cancel: messages not claimed yet end as cancelled.")


@router.get("/api/v1/deliveries/{delivery_id}/statuses", response_model=StatusPage)
async def statuses(
    delivery_id: DeliveryId,
    operator: Admin,
    conn: Conn,
    api: State,
    cursor: Annotated[str, Query(max_length=64, description="'' the first time")] = "",
    limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
) -> StatusPage:
    """Per-message status changes after `cursor`, one page, and the counters."""
    row = await owned(store.get_delivery(conn, delivery_id, operator.login), delivery_id)
    try:
        pulled = await store.pull(conn, row, cursor, min(limit, api.service.pull_page_max))
    except store.BadCursor as exc:
        raise ApiError(
            422, "invalid_request", f"query.cursor: {exc}", errors=[{"where": "query.cursor"}]
        ) from None
    return StatusPage(delivery_id=row.id, **vars(pulled))  # store.Pulled: the page's fields
