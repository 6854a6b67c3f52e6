"""smsmta.batch: the group-commit loop on a real PostgreSQL table. Batches by size
(max_batch) and by time (what arrives during a commit is the next batch); a lost
connection is ridden through in order, logged once; a refused batch is retried, then
fatal; one raising callback does not stop the others."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from sqlalchemy import URL
from structlog.testing import capture_logs

from smsmta.backoff import Backoff
from smsmta.batch import Batch, BatchWriter, Callback
from smsmta.db.engine import libpq_dsn

pytestmark = pytest.mark.timeout(60)

TABLE = "CREATE TABLE item (id serial PRIMARY KEY, n int NOT NULL CHECK (n >= 0), flush int)"
QUICK = Backoff(0.05, 0.05)


@dataclass
class Items(Batch):
    ns: list[int] = field(default_factory=list)
    callbacks: list[Callback] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ns)

    def take(self, limit: int | None) -> Items:
        limit = len(self.ns) if limit is None else limit
        head = Items(self.ns[:limit], self.callbacks[:limit])
        del self.ns[:limit], self.callbacks[:limit]
        return head

    def put_back(self, head: Items) -> None:
        self.ns[:0] = head.ns
        self.callbacks[:0] = head.callbacks


class ItemWriter(BatchWriter[Items]):
    def __init__(
        self, connect: Callable[[], Awaitable[psycopg.AsyncConnection]], **kw: Any
    ) -> None:
        super().__init__(Items(), connect, event_prefix="test", name="flush", **kw)
        self.sizes: list[int] = []  # of the batches committed

    def add(self, n: int, callback: Callback) -> None:
        self._pending.ns.append(n)
        self._pending.callbacks.append(callback)
        self._queued()

    async def _write(self, conn: psycopg.AsyncConnection, batch: Items) -> None:
        flush = len(self.sizes) + 1
        async with conn.cursor() as cursor, cursor.copy("COPY item (n, flush) FROM STDIN") as copy:
            for n in batch.ns:
                await copy.write_row((n, flush))

    def _committed(self, batch: Items) -> None:
        self.sizes.append(len(batch))


@pytest.fixture
def dsn(fresh_db_url: URL) -> Iterator[str]:
    dsn = libpq_dsn(fresh_db_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLE)
    yield dsn


def connector(dsn: str, *, failing: int = 0) -> Callable[[], Awaitable[psycopg.AsyncConnection]]:
    """connect(): the first `failing` calls go to a port nobody serves (a real failure)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=sock.getsockname()[1])
    calls = [0]

    async def connect() -> psycopg.AsyncConnection:
        calls[0] += 1
        target = dead if calls[0] <= failing else dsn
        return await psycopg.AsyncConnection.connect(target, autocommit=True, connect_timeout=5)

    return connect


async def stored(dsn: str) -> list[tuple[int, int]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute("SELECT n, flush FROM item ORDER BY id")
        return [(row[0], row[1]) for row in await cursor.fetchall()]


def recorder() -> tuple[list[int], Callable[[int], Callback]]:
    acked: list[int] = []
    return acked, lambda n: lambda: acked.append(n)


async def test_batches_by_size(dsn: str) -> None:
    writer = ItemWriter(connector(dsn), max_batch=10)
    acked, ack = recorder()
    for n in range(35):
        writer.add(n, ack(n))
    runner = asyncio.create_task(writer.run())
    await writer.close()
    await asyncio.wait_for(runner, 5)
    assert writer.sizes == [10, 10, 10, 5]
    assert [n for n, _ in await stored(dsn)] == acked == list(range(35))
    assert [flush for _, flush in await stored(dsn)] == [1] * 10 + [2] * 10 + [3] * 10 + [4] * 5
    assert (writer.stats.flushes, writer.stats.rows, writer.backlog) == (4, 35, 0)


async def test_what_arrives_during_a_commit_is_the_next_batch(dsn: str) -> None:
    """Group commit by time: no timer, the next batch is what gathered meanwhile."""
    blocker = await psycopg.AsyncConnection.connect(dsn)
    await blocker.execute("LOCK TABLE item IN ACCESS EXCLUSIVE MODE")
    writer = ItemWriter(connector(dsn))
    acked, ack = recorder()
    runner = asyncio.create_task(writer.run())
    writer.add(0, ack(0))
    async with asyncio.timeout(10):  # the first flush waits on the lock
        while True:
            cursor = await blocker.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'item'::regclass AND NOT granted"
            )
            if (await cursor.fetchone() or (0,))[0]:
                break
            await asyncio.sleep(0.02)
    for n in range(1, 21):
        writer.add(n, ack(n))
    assert acked == []  # nothing acknowledged before its commit
    await blocker.rollback()
    await writer.close()
    await asyncio.wait_for(runner, 5)
    await blocker.close()
    assert writer.sizes == [1, 20]
    assert acked == list(range(21))


async def test_a_lost_database_is_ridden_through_in_order_and_logged_once(dsn: str) -> None:
    writer = ItemWriter(connector(dsn, failing=3), backoff=QUICK, password="s3cret")
    acked, ack = recorder()
    with capture_logs() as logs:
        runner = asyncio.create_task(writer.run())
        for n in range(5):
            writer.add(n, ack(n))
        async with asyncio.timeout(10):
            while len(acked) < 5:
                await asyncio.sleep(0.01)
        # the connection dies between two batches: the next flush fails, reconnects
        assert writer.conn is not None
        pid = writer.conn.info.backend_pid
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for n in range(5, 10):
            writer.add(n, ack(n))
        await writer.close()
        await asyncio.wait_for(runner, 10)
    assert [n for n, _ in await stored(dsn)] == acked == list(range(10))  # in order, once
    events = [e["event"] for e in logs if e["event"].startswith("test.")]
    assert events == ["test.flush_failed", "test.flush_recovered"] * 2
    assert next(e for e in logs if e["event"] == "test.flush_recovered")["attempts"] == 3


async def test_a_refused_batch_is_retried_then_fatal(dsn: str) -> None:
    """A row the database refuses (CHECK) is no outage: logged each time, given up on after
    give_up_after attempts; run() raises, close() returns, nothing acknowledged."""
    writer = ItemWriter(connector(dsn), backoff=QUICK, give_up_after=3)
    acked, ack = recorder()
    for n in (1, -1, 2):
        writer.add(n, ack(n))
    with capture_logs() as logs:
        runner = asyncio.create_task(writer.run())
        with pytest.raises(psycopg.errors.CheckViolation):
            await asyncio.wait_for(runner, 10)
    await asyncio.wait_for(writer.close(), 5)
    rejected = [e for e in logs if e["event"] == "test.flush_rejected"]
    assert [e["attempt"] for e in rejected] == [1, 2, 3]
    assert [e["giving_up"] for e in rejected] == [False, False, True]
    assert acked == [] and await stored(dsn) == []
    assert writer.backlog == 3  # kept, in order, never acknowledged


async def test_a_raising_callback_does_not_stop_the_others(dsn: str) -> None:
    writer = ItemWriter(connector(dsn))
    acked, ack = recorder()

    def bad() -> None:
        raise RuntimeError("callback bug")

    flushed: list[int] = []
    writer.on_flushed = lambda rows, seconds: flushed.append(rows)
    for n in range(6):
        writer.add(n, bad if n == 2 else ack(n))
    with capture_logs() as logs:
        runner = asyncio.create_task(writer.run())
        await writer.close()
        await asyncio.wait_for(runner, 5)
    assert acked == [0, 1, 3, 4, 5]
    assert flushed == [6]
    assert [n for n, _ in await stored(dsn)] == list(range(6))  # written once
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["test.flush_callback_failed"]
