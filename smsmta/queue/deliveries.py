"""The states of a delivery (`mid.delivery.state`), every move between them, and their SQL.

Rules this module lives by:
- A delivery changes state only by one of the rows of `TRANSITIONS`:

      event     from                                  to         made by
      create    (no row yet)                          running    enqueue.create_delivery
      complete  pending                               running    complete_push()
      pause     pending, running, paused              paused     change_state()
      resume    paused, running                       running    change_state()
      cancel    pending, running, paused, cancelled   cancelled  change_state()
      done      running                               done       finish()

- Repeating pause, resume or cancel is harmless: the rows from a state to itself.
  `cancelled` and `done` are final: no row leaves them, so a cancelled delivery is never
  resumed and a done one never cancelled.
- A delivery is created `running`; found again by its account and marketing delivery id,
  it keeps the state it has. `pending` (being pushed in chunks) is the column's default,
  which only rows inserted otherwise have; the completion of the push moves them on.
  Completing the push of a delivery in any other state leaves its state as it is.
- These are thin statements run in the caller's transaction, and the caller keeps its row
  locks (midsourcing.store: FOR UPDATE of the delivery for complete and the operator's
  actions, so that a chunk, which holds FOR NO KEY UPDATE, waits for them).
  `change_state()` is given the state the caller read under that lock and refuses a move
  the table does not hold (`NotAllowed`, nothing written), like an illegal event in h11's
  state machine. `complete_push()` and `finish()` name the state they leave in their WHERE,
  so a concurrent move (a cancel) wins and they change nothing.
- Cancelling a delivery ends its messages not claimed yet in the same transaction
  (smsmta.queue.enqueue.cancel_pending); the messages' own states are smsmta.queue.states.
  The delivery's counters (to_send, the KPIs) are written by the queue modules that move
  its messages, not here.

Touches: the database (`mid.delivery`: state and updated_at).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from smsmta.db import DeliveryState

PENDING = DeliveryState.PENDING
RUNNING = DeliveryState.RUNNING
PAUSED = DeliveryState.PAUSED
CANCELLED = DeliveryState.CANCELLED
DONE = DeliveryState.DONE

FINAL: frozenset[DeliveryState] = frozenset({CANCELLED, DONE})

# the events an operator asks for through the mid API (change_state)
ACTIONS = ("pause", "resume", "cancel")


@dataclass(frozen=True)
class Transition:
    """One allowed move: `event` takes a delivery from `source` to `target`."""

    event: str
    source: DeliveryState | None  # None: the delivery is being created
    target: DeliveryState


TRANSITIONS: tuple[Transition, ...] = (
    Transition("create", None, RUNNING),
    Transition("complete", PENDING, RUNNING),
    Transition("pause", PENDING, PAUSED),
    Transition("pause", RUNNING, PAUSED),
    Transition("pause", PAUSED, PAUSED),
    Transition("resume", PAUSED, RUNNING),
    Transition("resume", RUNNING, RUNNING),
    Transition("cancel", PENDING, CANCELLED),
    Transition("cancel", RUNNING, CANCELLED),
    Transition("cancel", PAUSED, CANCELLED),
    Transition("cancel", CANCELLED, CANCELLED),
    Transition("done", RUNNING, DONE),
)

_MOVES: dict[tuple[str, DeliveryState | None], DeliveryState] = {
    (row.event, row.source): row.target for row in TRANSITIONS
}


class NotAllowed(ValueError):
    """A move the table does not hold; the delivery keeps its state."""


def move(event: str, source: DeliveryState | str | None) -> DeliveryState:
    """The state `event` takes a delivery in `source` to; NotAllowed when there is none."""
    state = None if source is None else DeliveryState(source)
    target = _MOVES.get((event, state))
    if target is None:
        raise NotAllowed(f"a delivery {state or 'not created'} cannot {event}")
    return target


def allowed(source: DeliveryState | None, target: DeliveryState) -> bool:
    """True if some event takes a delivery from `source` to `target`."""
    return any((row.source, row.target) == (source, target) for row in TRANSITIONS)


async def complete_push(conn: psycopg.AsyncConnection, delivery_id: int) -> None:
    """complete: a `pending` delivery starts `running`; one in any other state stays."""
    await conn.execute(
        "UPDATE mid.delivery SET state = 'running', updated_at = now() "
        "WHERE id = %s AND state = 'pending'",
        (delivery_id,),
    )


async def change_state(
    conn: psycopg.AsyncConnection, delivery_id: int, event: str, source: DeliveryState | str
) -> DeliveryState:
    """Pause, resume or cancel a delivery in `source`, the state the caller read under its
    row lock in this transaction; the state reached. NotAllowed (nothing written) when the
    table holds no such move."""
    if event not in ACTIONS:
        raise ValueError(f"{event!r} is not an operator's action: one of {ACTIONS}")
    target = move(event, source)
    await conn.execute(
        "UPDATE mid.delivery SET state = %s, updated_at = now() WHERE id = %s",
        (target.value, delivery_id),
    )
    return target


async def finish(conn: psycopg.AsyncConnection, delivery_id: int) -> bool:
    """done: a `running` delivery whose push is complete and whose messages are all final
    (the caller checked both) ends; True if it did, False if it was no longer running."""
    cursor = await conn.execute(
        "UPDATE mid.delivery SET state = 'done', updated_at = now() "
        "WHERE id = %s AND state = 'running'",
        (delivery_id,),
    )
    return cursor.rowcount == 1
