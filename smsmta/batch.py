"""The batch writer: what a service hands over, made durable in group commits.

`BatchWriter` is the loop the MTA's outcome writer (mta.writer) and the inbox
(smsmta.queue.inbox) share; a subclass says what a batch holds (a `Batch`) and how it is
written (`_write(conn, batch)`, inside the transaction the loop opened). The rules, one
for each way the two loops used to differ:

- Group commit. `run()` sleeps until something is queued, then flushes back to back
  while anything is pending: a flush takes what accumulated (at most `max_batch` items;
  all of it when None) and writes it in ONE transaction. While one commits the next
  gathers, so the batch size follows the load and nothing waits for a timer.
- Callbacks after the commit, never before. Each item's callback runs once its
  transaction committed, in order, once. One that raises is logged
  (`callback_event`) and the others still run; so do `_committed` (the subclass's
  bookkeeping) and `on_flushed(items, seconds)`. Nothing after the commit can put the
  batch back (which would write it twice).
- Failure keeps the order. A flush that fails puts its items back in front of what came
  meanwhile; none of their callbacks runs.
- Transient failures are retried for ever: `psycopg.OperationalError` (connection lost,
  server shutting down or starting, deadlock, serialization failure, lock or statement
  timeout), or any psycopg error after which the connection is closed or broken. They
  are one outage, logged through `smsmta.backoff.Outage`: `<prefix>.<name>_failed` when it
  begins, `<prefix>.<name>_recovered` at the next flush that commits, the password masked;
  `backoff` apart (1 s by default, as both loops always waited).
- Lazy reconnection. After a failure a closed or broken connection is dropped; the next
  flush connects (`connect()`), and a failed connect is one more transient failure.
- Anything else (a row the database refuses, a bug in `_write`) is no outage: the same
  batch gets the same answer. Each time it is logged at error level
  (`<prefix>.<name>_rejected`) and retried, `give_up_after` times in a row (room for an
  error misclassified as permanent), then `run()` raises it. The owner treats the end
  of `run()` as fatal (its task's done callback stops the process, exit 1): a poison
  item neither loops for ever unnoticed nor leaves a process running without its
  writer. Its callbacks never ran, so nothing was acknowledged that is not stored.
- `close()` writes what is pending, stops `run()`, then closes the connection; it
  returns at once when `run()` already ended (what is pending then stays unwritten).

Touches: the database through the subclass's `_write`, and the log.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar

import psycopg
import structlog

from smsmta.backoff import Backoff, Outage

Callback = Callable[[], object]
Connect = Callable[[], Awaitable[psycopg.AsyncConnection]]

#: the wait between attempts after a failed flush: 1 s, as both writers always did
RETRY = Backoff(1.0, 1.0)
#: non-transient failures in a row before run() gives up and raises
GIVE_UP_AFTER = 5


class Batch(ABC):
    """What a BatchWriter accumulates: items, and the callbacks due once they committed."""

    callbacks: list[Callback]

    @abstractmethod
    def __len__(self) -> int:
        """How many items (not callbacks) it holds."""

    @abstractmethod
    def take(self, limit: int | None) -> Self:
        """Remove and return the first `limit` items (all when None) with their callbacks."""

    @abstractmethod
    def put_back(self, head: Self) -> None:
        """Put `head` (what take() returned, not written) back in front, order kept."""


B = TypeVar("B", bound=Batch)


@dataclass
class BatchStats:
    flushes: int = 0
    rows: int = 0


def is_transient(error: BaseException, conn: psycopg.AsyncConnection | None) -> bool:
    """A failure to ride out (see the module docstring), as opposed to a refusal."""
    if isinstance(error, psycopg.OperationalError):
        return True
    return isinstance(error, psycopg.Error) and conn is not None and (conn.closed or conn.broken)


class BatchWriter(ABC, Generic[B]):
    """The group-commit loop; see the module docstring. Subclasses define `_write`."""

    stats: BatchStats

    def __init__(
        self,
        pending: B,
        connect: Connect,
        *,
        event_prefix: str,
        name: str,
        conn: psycopg.AsyncConnection | None = None,
        max_batch: int | None = None,
        backoff: Backoff = RETRY,
        password: str | None = None,
        give_up_after: int = GIVE_UP_AFTER,
        callback_event: str | None = None,
        logger: Any = None,
    ) -> None:
        self.connect = connect
        self.conn = conn
        self.max_batch = max_batch
        self.give_up_after = give_up_after
        self._log = logger if logger is not None else structlog.get_logger(event_prefix)
        self.outage = Outage(
            name,
            password,
            event_prefix=event_prefix,
            backoff=backoff,
            lost=f"{name}_failed",
            back=f"{name}_recovered",
            logger=self._log,
        )
        self.rejected_event = f"{event_prefix}.{name}_rejected"
        self.callback_event = f"{event_prefix}.{callback_event or name + '_callback_failed'}"
        self.stats = BatchStats()
        #: called after each commit with (items written, seconds the flush took)
        self.on_flushed: Callable[[int, float], None] | None = None
        self._pending = pending
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    @abstractmethod
    async def _write(self, conn: psycopg.AsyncConnection, batch: B) -> None:
        """Write `batch` on `conn`, inside the transaction the loop holds open."""

    def _committed(self, batch: B) -> None:
        """Bookkeeping once `batch` committed, before its callbacks (guarded)."""

    def _queued(self) -> None:
        """Something was added to the pending batch: wake run()."""
        self._idle.clear()
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        """Items handed over and not yet committed."""
        return len(self._pending)

    async def run(self) -> None:
        """Flush back to back while there is something to write; until close()."""
        rejected = 0
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while len(self._pending):
                    try:
                        await self.flush()
                    except Exception as error:
                        if is_transient(error, self.conn):
                            delay = self.outage.failed(error, rows=len(self._pending))
                        else:
                            rejected += 1
                            self._rejected(error, rejected)
                            delay = self.outage.backoff.delay(rejected)
                        await self._drop_broken()
                        await asyncio.sleep(delay)
                    else:
                        rejected = 0
                        self.outage.recovered()
                self._idle.set()
                if self._closing:
                    return
        finally:
            self._idle.set()  # close() must not wait for a loop that is gone

    def _rejected(self, error: Exception, attempt: int) -> None:
        last = attempt >= self.give_up_after
        extra: dict[str, Any] = {"exc_info": error} if last else {}
        self._log.error(
            self.rejected_event,
            loop=self.outage.what,
            error=self.outage.describe(error),
            error_type=type(error).__name__,
            attempt=attempt,
            rows=len(self._pending),
            giving_up=last,
            **extra,
        )
        if last:
            raise error

    async def _drop_broken(self) -> None:
        conn = self.conn
        if conn is not None and (conn.closed or conn.broken):
            self.conn = None
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def close(self) -> None:
        """Write what is pending, stop run(), close the connection."""
        self._closing = True
        self._wakeup.set()
        await self._idle.wait()
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                await self.conn.close()

    async def flush(self) -> None:
        """Write what is pending (at most max_batch items) in one transaction, then run
        its callbacks."""
        if not len(self._pending):
            return
        if self.conn is None:
            self.conn = await self.connect()
        conn = self.conn
        batch = self._pending.take(self.max_batch)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with conn.transaction():
                await self._write(conn, batch)
        except BaseException:
            self._pending.put_back(batch)
            raise
        # committed: from here on nothing may raise (the batch must not be written twice)
        self.stats.flushes += 1
        self.stats.rows += len(batch)
        self._guarded(self._committed, batch)
        for callback in batch.callbacks:
            try:
                callback()
            except Exception:  # one bad callback must not keep the others from running
                self._log.exception(self.callback_event, loop=self.outage.what)
        if self.on_flushed is not None:
            self._guarded(self.on_flushed, len(batch), loop.time() - started)

    def _guarded(self, function: Callable[..., object], *args: Any) -> None:
        try:
            function(*args)
        except Exception:
            self._log.exception(self.callback_event, loop=self.outage.what)
