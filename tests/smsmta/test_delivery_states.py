"""smsmta.queue.deliveries: the delivery states' transition table, row by row, and the
product's SQL held to it.

Every allowed move is listed here with its event (a row added to or dropped from the
table fails until it is written down), then moves that must stay forbidden, each with
why. The SQL test reads the product's string constants (tests/source.py): the state of
`mid.delivery` is set only by smsmta.queue.deliveries (and by the insert of
smsmta.queue.enqueue, the `create` row), so the table is the whole story.
"""

from __future__ import annotations

import re

import pytest

from smsmta.db import DeliveryState
from smsmta.queue.deliveries import (
    ACTIONS,
    CANCELLED,
    DONE,
    FINAL,
    PAUSED,
    PENDING,
    RUNNING,
    TRANSITIONS,
    NotAllowed,
    Transition,
    allowed,
    move,
)
from smsmta.queue.enqueue import CREATE_DELIVERY
from tests.source import strings

# (event, from, to): None is "not created yet"
ALLOWED = [
    ("create", None, RUNNING),
    ("complete", PENDING, RUNNING),
    ("pause", PENDING, PAUSED),
    ("pause", RUNNING, PAUSED),
    ("pause", PAUSED, PAUSED),
    ("resume", PAUSED, RUNNING),
    ("resume", RUNNING, RUNNING),
    ("cancel", PENDING, CANCELLED),
    ("cancel", RUNNING, CANCELLED),
    ("cancel", PAUSED, CANCELLED),
    ("cancel", CANCELLED, CANCELLED),
    ("done", RUNNING, DONE),
]

# (event, from, why it must stay refused)
FORBIDDEN = [
    ("resume", PENDING, "a delivery being pushed was never paused"),
    ("resume", CANCELLED, "final: a cancelled delivery's messages are ended"),
    ("resume", DONE, "final"),
    ("pause", CANCELLED, "final"),
    ("pause", DONE, "final"),
    ("cancel", DONE, "final: every message already ended"),
    ("complete", RUNNING, "the completion starts only a pending delivery (the rest stay)"),
    ("complete", PAUSED, "a paused delivery stays paused when its push completes"),
    ("complete", CANCELLED, "final"),
    ("done", PENDING, "done needs the push complete, which starts it first"),
    ("done", PAUSED, "a paused delivery is resumed before it ends"),
    ("done", CANCELLED, "final"),
    ("create", PENDING, "a delivery found again keeps its state"),
    ("create", CANCELLED, "a delivery found again keeps its state"),
]


def test_the_table_is_the_list() -> None:
    assert list(TRANSITIONS) == [Transition(*row) for row in ALLOWED]


@pytest.mark.parametrize(("event", "source", "target"), ALLOWED)
def test_allowed(event: str, source: DeliveryState | None, target: DeliveryState) -> None:
    assert move(event, source) is target
    assert allowed(source, target)


@pytest.mark.parametrize(("event", "source", "why"), FORBIDDEN)
def test_forbidden(event: str, source: DeliveryState, why: str) -> None:
    with pytest.raises(NotAllowed):
        move(event, source)


def test_the_database_text_is_read() -> None:
    # the store reads the state as text (d.state::text)
    assert move("cancel", "paused") is CANCELLED
    with pytest.raises(NotAllowed, match="a delivery done cannot cancel"):
        move("cancel", "done")


def test_final_states_are_never_left() -> None:
    assert {CANCELLED, DONE} == FINAL
    leaving = [row for row in TRANSITIONS if row.source in FINAL and row.target != row.source]
    assert not leaving


def test_every_state_is_reached_and_the_actions_are_repeatable() -> None:
    assert {row.target for row in TRANSITIONS} == {RUNNING, PAUSED, CANCELLED, DONE}
    assert not allowed(None, PENDING)  # the column's default, never made by the product
    for action in ACTIONS:
        target = next(row.target for row in TRANSITIONS if row.event == action)
        assert move(action, target) is target, f"repeating {action} must be harmless"


SETS_STATE = re.compile(r"\bUPDATE\s+mid\.delivery\b(?:\s+\w+)?\s+SET\b[^;]*?\bstate\s*=", re.I)


def test_only_the_queue_layer_moves_a_delivery() -> None:
    places = {
        f"{text.path}:{text.line}": text.module
        for text in strings()
        if SETS_STATE.search(text.value)
    }
    assert places, "the reader found no statement at all"
    strangers = {place for place, module in places.items() if module != "smsmta.queue.deliveries"}
    assert not strangers, f"set mid.delivery.state through smsmta.queue.deliveries: {strangers}"


def test_create_inserts_the_state_of_the_create_row() -> None:
    inserted = re.search(r"\bVALUES\b.*?'(\w+)'", CREATE_DELIVERY, re.DOTALL)
    assert inserted is not None
    assert move("create", None) == inserted[1]
    found_again = CREATE_DELIVERY.split("DO UPDATE", 1)[1]
    assert "state" not in found_again, "a delivery found again keeps its state"
