"""smsmta.queue.states: the message states' transition table, row by row, and the product's
SQL held to it.

The table test lists every allowed move with the module that performs it (a row added to
or dropped from the table fails here until it is written down), then moves that must stay
forbidden. The SQL test reads every statement that writes `mid.broad_log` in the product
packages (string constants of their .py files), works out the move it makes (`SET status`
against the `WHERE status` / `status IN` guard, or the lease guard that stands for
`sending`) and checks it against the table, module included; and every row of the table
must be made by some statement, so table and SQL say the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from smsmta.db import MessageStatus
from smsmta.queue.states import (
    CANCELLED,
    DELIVERED,
    FAILED,
    FINAL,
    NO_RECEIPT,
    PENDING,
    SENDING,
    SENT,
    TRANSITIONS,
    Transition,
    allowed,
    performed_by,
)
from tests.source import strings

# (event, from, to, performed by): None is "not queued yet" / "deleted"
ALLOWED = [
    ("enqueue", None, PENDING, "smsmta.queue.enqueue"),
    ("claim", PENDING, SENDING, "smsmta.queue.claims"),
    ("submit_ok", SENDING, SENT, "smsmta.queue.outcomes"),
    ("submit_failed", SENDING, FAILED, "smsmta.queue.outcomes"),
    ("submit_retry", SENDING, PENDING, "smsmta.queue.outcomes"),
    ("reclaim", SENDING, PENDING, "smsmta.queue.claims"),
    ("receipt_delivered", SENT, DELIVERED, "smsmta.queue.receipts"),
    ("receipt_failed", SENT, FAILED, "smsmta.queue.receipts"),
    ("receipt_retry", SENT, PENDING, "smsmta.queue.receipts"),
    ("no_receipt", SENT, NO_RECEIPT, "smsmta.queue.expiry"),
    ("cancel", PENDING, CANCELLED, "smsmta.queue.enqueue"),
    ("purge", DELIVERED, None, "smsmta.queue.purge"),
    ("purge", FAILED, None, "smsmta.queue.purge"),
    ("purge", CANCELLED, None, "smsmta.queue.purge"),
    ("purge", NO_RECEIPT, None, "smsmta.queue.purge"),
]

# (from, to, why it must stay forbidden)
FORBIDDEN = [
    (None, SENDING, "a message is queued pending, never claimed on insert"),
    (None, SENT, "a message is queued pending"),
    (PENDING, SENT, "only a claimed message is sent"),
    (PENDING, FAILED, "a pending message fails only through an attempt"),
    (PENDING, DELIVERED, "no receipt for a message never sent"),
    (PENDING, None, "the purge takes final messages only"),
    (SENDING, DELIVERED, "a receipt applies to a sent message"),
    (SENDING, CANCELLED, "a claimed message finishes its attempt"),
    (SENDING, NO_RECEIPT, "only a sent message waits for a receipt"),
    (SENDING, None, "the purge takes final messages only"),
    (SENT, SENDING, "a sent message goes back to the queue as pending"),
    (SENT, CANCELLED, "a sent message cannot be cancelled"),
    (SENT, None, "the purge takes final messages only"),
    (DELIVERED, PENDING, "final"),
    (DELIVERED, FAILED, "final: a late failure receipt is a duplicate"),
    (FAILED, PENDING, "final"),
    (FAILED, DELIVERED, "final: a late success receipt is a duplicate"),
    (CANCELLED, PENDING, "final: a resumed delivery does not bring them back"),
    (NO_RECEIPT, DELIVERED, "final: a receipt after the wait is a duplicate"),
    (NO_RECEIPT, FAILED, "final"),
    (PENDING, PENDING, "not a move"),
]


@pytest.mark.parametrize(("event", "source", "target", "module"), ALLOWED)
def test_allowed(
    event: str, source: MessageStatus | None, target: MessageStatus | None, module: str
) -> None:
    assert Transition(event, source, target, module) in TRANSITIONS
    assert allowed(source, target)
    assert module in performed_by(source, target)


def test_the_table_holds_exactly_these_rows() -> None:
    assert sorted(map(repr, TRANSITIONS)) == sorted(repr(Transition(*row)) for row in ALLOWED)


@pytest.mark.parametrize(("source", "target", "why"), FORBIDDEN)
def test_forbidden(source: MessageStatus | None, target: MessageStatus | None, why: str) -> None:
    assert not allowed(source, target), why
    assert performed_by(source, target) == set()


def test_final_states_are_left_only_by_the_purge() -> None:
    assert {DELIVERED, FAILED, CANCELLED, NO_RECEIPT} == FINAL
    for row in TRANSITIONS:
        if row.source in FINAL:
            assert (row.event, row.target) == ("purge", None)
    assert {row.source for row in TRANSITIONS if row.event == "purge"} == FINAL


def test_every_state_is_reached_and_left() -> None:
    for state in MessageStatus:
        assert any(row.target == state for row in TRANSITIONS), state
        assert any(row.source == state for row in TRANSITIONS), state


def test_statuses_given_as_text_are_checked_too() -> None:
    assert allowed("sent", "delivered")  # type: ignore[arg-type]
    assert not allowed("delivered", "sent")  # type: ignore[arg-type]


# ---- the product's SQL against the table ----

WRITE = re.compile(
    r"\b(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM|COPY)\s+mid\.broad_log\b(?!_)", re.IGNORECASE
)
STATEMENT = re.compile(r"^\s*(?:WITH|UPDATE|INSERT|DELETE|COPY)\b", re.IGNORECASE)
UPDATE_SET = re.compile(
    r"\bUPDATE\s+mid\.broad_log\b(?:\s+(?!SET\b)\w+)?\s+SET\b(?P<set>.*?)(?=\bFROM\b|\bWHERE\b|$)",
    re.IGNORECASE | re.DOTALL,
)
INSERTED = re.compile(
    r"\b(?:INSERT\s+INTO|COPY)\s+mid\.broad_log\s*\((?P<columns>[^)]*)\)", re.IGNORECASE
)
DELETE = re.compile(r"\bDELETE\s+FROM\s+mid\.broad_log\b(?!_)", re.IGNORECASE)
STATUS_IS = re.compile(r"\bstatus\s*=\s*'(\w+)'", re.IGNORECASE)
STATUS_IN = re.compile(r"\bstatus\s+IN\s*\(([^)]*)\)", re.IGNORECASE)
# lease_owner is set by the claim alone and cleared by every move out of `sending`
LEASE_GUARD = re.compile(r"\blease_owner\s*=\s*%", re.IGNORECASE)


def _writes() -> Iterator[tuple[str, int, str]]:
    """(module, line, statement) for every string constant of the product writing broad_log."""
    for text in strings():
        if not WRITE.search(text.value):
            continue
        assert not text.formatted, (
            f"{text.path}:{text.line}: write broad_log statements as constants "
            "(not f-strings), so that this test can read their transition"
        )
        assert STATEMENT.match(text.value), (
            f"{text.path}:{text.line}: a broad_log write built from pieces: "
            "write the statement as one constant"
        )
        yield text.module, text.line, text.value


def _statuses(text: str) -> set[MessageStatus]:
    found = {MessageStatus(value) for value in STATUS_IS.findall(text)}
    for listed in STATUS_IN.findall(text):
        found |= {MessageStatus(value) for value in re.findall(r"'(\w+)'", listed)}
    return found


def _moves(statement: str) -> set[tuple[MessageStatus | None, MessageStatus | None]]:
    """The (from, to) moves one statement makes."""
    moves: set[tuple[MessageStatus | None, MessageStatus | None]] = set()
    for match in INSERTED.finditer(statement):
        columns = {column.strip().lower() for column in match["columns"].split(",")}
        assert "status" not in columns, f"a message is queued as pending: {statement}"
        moves.add((None, PENDING))
    update = UPDATE_SET.search(statement)
    if update is not None:
        targets = {MessageStatus(value) for value in STATUS_IS.findall(update["set"])}
        assert len(targets) <= 1, statement
        if targets:
            rest = statement[: update.start("set")] + statement[update.end("set") :]
            sources = _statuses(rest)
            if LEASE_GUARD.search(rest):
                sources.add(SENDING)
            assert sources, f"an UPDATE of broad_log.status without a status guard: {statement}"
            moves |= {(source, target) for source in sources for target in targets}
    if DELETE.search(statement):
        sources = _statuses(statement)
        assert sources, f"a DELETE from broad_log without a status guard: {statement}"
        moves |= {(source, None) for source in sources}
    return moves


WRITES = list(_writes())


def test_the_sql_is_found() -> None:
    modules = {module for module, _, _ in WRITES}
    assert {"smsmta.queue.enqueue", "smsmta.queue.claims", "smsmta.queue.expiry"} <= modules
    assert len(WRITES) >= 12


@pytest.mark.parametrize(
    ("module", "line", "statement"), WRITES, ids=[f"{m}:{line}" for m, line, _ in WRITES]
)
def test_every_broad_log_write_is_an_allowed_transition(
    module: str, line: int, statement: str
) -> None:
    moves = _moves(statement)
    assert moves, f"{module}:{line}: writes broad_log but makes no move the test can read"
    for source, target in moves:
        assert allowed(source, target), f"{module}:{line}: {source} -> {target} is not in the table"
        assert module in performed_by(source, target), (
            f"{module}:{line}: {source} -> {target} belongs to {performed_by(source, target)}"
        )


def test_every_row_of_the_table_is_performed() -> None:
    made = {(module, move) for module, _, statement in WRITES for move in _moves(statement)}
    for row in TRANSITIONS:
        assert (row.module, (row.source, row.target)) in made, row


@pytest.mark.parametrize(
    ("statement", "moves"),
    [
        (
            "UPDATE mid.broad_log SET status = 'sent' WHERE id = 1 AND status = 'pending'",
            {(PENDING, SENT)},
        ),
        (
            "UPDATE mid.broad_log b SET status = 'failed' FROM x WHERE b.lease_owner = %(owner)s",
            {(SENDING, FAILED)},
        ),
        (
            "DELETE FROM mid.broad_log WHERE status IN ('delivered', 'sent')",
            {(DELIVERED, None), (SENT, None)},
        ),
        ("COPY mid.broad_log (delivery_id, address) FROM STDIN", {(None, PENDING)}),
    ],
)
def test_the_reader_of_statements(
    statement: str, moves: set[tuple[MessageStatus | None, MessageStatus | None]]
) -> None:
    assert _moves(statement) == moves


def test_an_update_without_a_guard_is_refused() -> None:
    with pytest.raises(AssertionError, match="without a status guard"):
        _moves("UPDATE mid.broad_log SET status = 'pending' WHERE id = 1")
