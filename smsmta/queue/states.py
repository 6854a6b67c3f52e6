"""The states of a queued message (`mid.broad_log.status`) and every move between them.

Rules this module lives by:
- A message changes state only by one of the rows of `TRANSITIONS`. Each row names the
  event, the state it leaves (None: the row did not exist: enqueue), the state it reaches
  (None: the row is deleted: purge) and the module whose SQL performs it.
- The moves are SQL statements (batched, in the writer's transaction), not calls into
  this module: the table is checked against them by tests/smsmta/test_states.py, which
  reads every `UPDATE mid.broad_log` of the product and fails on a move the table does
  not hold. A new move is added here first, with the module that makes it.
- Every UPDATE names the state it leaves in its WHERE (`status = '...'`), or takes only
  rows claimed under its own lease (`lease_owner = <owner>`): `lease_owner` is set by
  the claim alone and cleared by every move out of `sending`, so it stands for `sending`.
- A final state (`FINAL`) is left only by the purge. A receipt for a final message is
  recorded as a duplicate and changes nothing.

Pure data: touches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from smsmta.db import MessageStatus

PENDING = MessageStatus.PENDING
SENDING = MessageStatus.SENDING
SENT = MessageStatus.SENT
DELIVERED = MessageStatus.DELIVERED
FAILED = MessageStatus.FAILED
CANCELLED = MessageStatus.CANCELLED
NO_RECEIPT = MessageStatus.NO_RECEIPT

FINAL: frozenset[MessageStatus] = frozenset({DELIVERED, FAILED, CANCELLED, NO_RECEIPT})


@dataclass(frozen=True)
class Transition:
    """One allowed move: `event` takes a message from `source` to `target`."""

    event: str
    source: MessageStatus | None  # None: the message is being queued
    target: MessageStatus | None  # None: the message is deleted
    module: str  # whose SQL performs it


def _purges() -> tuple[Transition, ...]:
    # one row per final state, in the order the purge's SQL lists them
    order = (DELIVERED, FAILED, CANCELLED, NO_RECEIPT)
    return tuple(Transition("purge", state, None, "smsmta.queue.purge") for state in order)


TRANSITIONS: tuple[Transition, ...] = (
    Transition("enqueue", None, PENDING, "smsmta.queue.enqueue"),
    Transition("claim", PENDING, SENDING, "smsmta.queue.claims"),
    Transition("submit_ok", SENDING, SENT, "smsmta.queue.outcomes"),
    Transition("submit_failed", SENDING, FAILED, "smsmta.queue.outcomes"),
    Transition("submit_retry", SENDING, PENDING, "smsmta.queue.outcomes"),
    Transition("reclaim", SENDING, PENDING, "smsmta.queue.claims"),
    Transition("receipt_delivered", SENT, DELIVERED, "smsmta.queue.receipts"),
    Transition("receipt_failed", SENT, FAILED, "smsmta.queue.receipts"),
    Transition("receipt_retry", SENT, PENDING, "smsmta.queue.receipts"),
    Transition("no_receipt", SENT, NO_RECEIPT, "smsmta.queue.expiry"),
    Transition("cancel", PENDING, CANCELLED, "smsmta.queue.enqueue"),
    *_purges(),
)

_ALLOWED: frozenset[tuple[MessageStatus | None, MessageStatus | None]] = frozenset(
    (row.source, row.target) for row in TRANSITIONS
)


def allowed(source: MessageStatus | None, target: MessageStatus | None) -> bool:
    """True if a message may go from `source` to `target` (None: not queued / deleted)."""
    return (source, target) in _ALLOWED


def performed_by(source: MessageStatus | None, target: MessageStatus | None) -> set[str]:
    """The modules allowed to move a message from `source` to `target`."""
    return {row.module for row in TRANSITIONS if (row.source, row.target) == (source, target)}
