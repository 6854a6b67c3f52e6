"""The architecture the README describes, held by a test (README "Architecture").

- **One owner per table.** Every table of both schemas has a stated owner here, and only
  its owner's SQL writes it (INSERT, UPDATE, DELETE, COPY ... FROM STDIN, TRUNCATE, read
  from the string constants of the product's modules). The queue tables belong to the
  queue layer, `smsmta.queue`, as a package: which of its modules makes which move of a
  message is the transition table of smsmta.queue.states (tests/smsmta/test_states.py).
  A statement writing a table of ours without naming its schema is refused, so a write
  cannot hide from this test behind an unqualified name.
- **Short modules.** A module of the four packages (the test kit included) over 600
  lines states here why it is one piece.
- The import layers (tools > services > kernel > SMPP library, services never importing
  each other) are pyproject.toml's `[tool.importlinter]` contract, checked by
  `lint-imports` in `./run tests`.
"""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from smsmta.db import SIDES
from tests.source import PACKAGES, ROOT, strings

QUEUE = "smsmta.queue"

# table -> the module (or, for the queue layer, the package) that alone writes it
OWNERS = {
    # the queue layer: messages, their parts' provider ids, receipts, the inbox, deliveries
    "mid.broad_log": QUEUE,
    "mid.broad_log_msg": QUEUE,
    "mid.provider_msg_id": QUEUE,
    "mid.inbox": QUEUE,
    "mid.receipt": QUEUE,
    "mid.delivery": QUEUE,
    # the kernel
    "mid.external_account": "smsmta.accounts",
    "mid.short_code_blacklist": "smsmta.blacklist",
    "mid.mta_lease": "smsmta.binds",
    "mid.bind_slot": "smsmta.binds",
    "mid.reply_outbox": "smsmta.replies",
    # the services' own state
    "mid.rate_share": "mta.coordination",
    "mid.in_sms": "sms_process.mo",
    "mid.operator": "midsourcing.auth",
    "mid.operator_token": "midsourcing.auth",
    "mid.login_failure": "midsourcing.auth",
    "mid.delivery_sync": "midsourcing.store",
    "marketing.recipient": "midsourcing.marketing",
    "marketing.delivery_template": "midsourcing.marketing",
    "marketing.delivery": "midsourcing.marketing",
    "marketing.delivery_message": "midsourcing.marketing",
    "marketing.delivery_error": "midsourcing.marketing",
}

# (table, module) -> why a second module writes the table
SHARED = {
    ("mid.mta_lease", "smsmta.queue.claims"): (
        "the reclaim deletes an expired lease in the statement that hands its messages back "
        "to the queue, so no message is ever left claimed by an owner that is gone"
    ),
}

# module path -> why it stays one piece past LIMIT lines
LIMIT = 600
LONG: dict[str, str] = {}

TABLE = r"(?P<table>(?:mid|marketing)\.\w+)"
WRITES = [
    re.compile(rf"\bINSERT\s+INTO\s+{TABLE}", re.IGNORECASE),
    re.compile(rf"(?<!\bFOR\s)(?<!\bKEY\s)\bUPDATE\s+(?:ONLY\s+)?{TABLE}", re.IGNORECASE),
    re.compile(rf"\bDELETE\s+FROM\s+(?:ONLY\s+)?{TABLE}", re.IGNORECASE),
    re.compile(rf"\bCOPY\s+{TABLE}\b[^;]*?\bFROM\s+STDIN", re.IGNORECASE | re.DOTALL),
    re.compile(rf"\bTRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?{TABLE}", re.IGNORECASE),
]
STATEMENT = re.compile(r"^\s*(?:WITH|INSERT|UPDATE|DELETE|COPY|TRUNCATE)\b", re.IGNORECASE)
BARE = re.compile(
    r"(?<!\bFOR\s)(?<!\bKEY\s)\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY|TRUNCATE)"
    r"\s+(?P<name>\w+)\b(?!\.)",
    re.IGNORECASE,
)
TABLES = {name for metadata in SIDES.values() for name in metadata.tables}


def written(text: str) -> set[str]:
    """The tables of ours one piece of SQL writes."""
    return {match["table"].lower() for write in WRITES for match in write.finditer(text)}


def _writers() -> dict[str, dict[str, list[str]]]:
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for text in strings():
        for table in written(text.value):
            found[table][text.module].append(f"{text.path}:{text.line}")
    return found


WRITERS = _writers()


def _owns(owner: str, module: str) -> bool:
    return module == owner or (owner == QUEUE and module.startswith(QUEUE + "."))


def test_every_table_has_an_owner() -> None:
    assert set(OWNERS) == TABLES, "a table without a stated owner, or an owner of no table"


def test_the_reader_finds_the_writes() -> None:
    # the reader itself: what it must and must not take for a write
    assert written("UPDATE mid.broad_log b SET status = 'sent'") == {"mid.broad_log"}
    assert written("SELECT 1 FROM mid.delivery FOR UPDATE") == set()
    assert written("SELECT id FROM mid.inbox FOR NO KEY UPDATE SKIP LOCKED") == set()
    assert written("COPY mid.receipt (id) TO STDOUT") == set()
    assert written("COPY mid.provider_msg_id (id, x) FROM STDIN") == {"mid.provider_msg_id"}
    assert written("WITH d AS (DELETE FROM mid.mta_lease RETURNING owner) SELECT 1") == {
        "mid.mta_lease"
    }
    # and every table with an owner other than the test kit is written by the product
    assert set(WRITERS) == TABLES


@pytest.mark.parametrize("table", sorted(OWNERS))
def test_only_the_owner_writes(table: str) -> None:
    owner = OWNERS[table]
    strangers = {
        module: places
        for module, places in WRITERS.get(table, {}).items()
        if not _owns(owner, module) and (table, module) not in SHARED
    }
    assert not strangers, f"{table} belongs to {owner}, but is written from {strangers}"


def test_every_shared_write_is_still_there() -> None:
    for table, module in SHARED:
        assert module in WRITERS.get(table, {}), f"{module} no longer writes {table}: drop it"


def test_tables_are_named_with_their_schema() -> None:
    bare = {name.split(".", 1)[1] for name in TABLES}
    unqualified = [
        f"{text.path}:{text.line}: {match['name']}"
        for text in strings()
        if STATEMENT.match(text.value)
        for match in BARE.finditer(text.value)
        if match["name"].lower() in bare
    ]
    assert not unqualified, "write mid.<table> or marketing.<table>: " + ", ".join(unqualified)


def test_modules_are_short_or_say_why() -> None:
    long = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            lines = path.read_text().count("\n")
            if lines > LIMIT and relative not in LONG:
                long[relative] = lines
    assert not long, f"split these modules, or say in LONG why each is one piece: {long}"
    for relative in LONG:
        assert (ROOT / relative).read_text().count("\n") > LIMIT, f"{relative}: drop it from LONG"
