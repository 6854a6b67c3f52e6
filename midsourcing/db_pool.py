"""The mid API's database connections: a psycopg_pool pool of autocommit connections.

`new_pool(dsn, size)` makes it closed; the API opens it in its lifespan and closes it at
the end. Its contract, what the routes and the authenticator rely on:
- at most `size` connections (mid.db_pool_size), made when asked for (none at start) and
  closed after `max_idle` unused or `max_lifetime` old, so a restarted database or a
  leaking server process costs nothing for long;
- each connection is checked when it is borrowed (an empty query): one that broke while
  idle, a restarted database for instance, is replaced, not handed to a route;
- a connection given back inside a transaction is rolled back, a broken one closed;
- a request waits at most `WAIT_SECONDS` for a connection, then gets PoolTimeout, a
  psycopg.OperationalError, which the API answers 503 `database_unavailable` (an
  unreachable database ends the same way: the pool keeps trying to connect meanwhile).
`pool.get_stats()` gives the pool's figures (size, available, waiting, waits, errors).
Touches: the database (connections only).
"""

from __future__ import annotations

import psycopg
from psycopg_pool import AsyncConnectionPool

WAIT_SECONDS = 10.0
"""Longest wait for a connection: below the marketing client's HTTP timeout (30 s), so
that a busy or unreachable database gets a 503 it retries, not a timeout."""
MAX_IDLE_SECONDS = 600.0
MAX_LIFETIME_SECONDS = 3600.0


def new_pool(dsn: str, size: int) -> AsyncConnectionPool[psycopg.AsyncConnection]:
    """The API's pool for `dsn`, closed: `await pool.open()` in the running event loop."""
    return AsyncConnectionPool(
        dsn,
        kwargs={"autocommit": True},
        min_size=0,
        max_size=size,
        open=False,
        check=AsyncConnectionPool.check_connection,
        timeout=WAIT_SECONDS,
        max_idle=MAX_IDLE_SECONDS,
        max_lifetime=MAX_LIFETIME_SECONDS,
        name="mid-api",
    )
