"""Which PostgreSQL to use, and the embedded one when none is named.

`SMSMTA_DATABASE_URL`, else the settings' `database.url`, names the database. Where
neither is given, `embedded(path)` starts a private PostgreSQL 16 from the `pgserver`
package (about a second) and stops it when the last process using it lets go. pgserver
runs the server as a system user `pgserver` and opens the read bit on every parent of
its data directory, so the data lives under a directory made for it
(`/var/lib/smsmta/pgdata` as root, `~/.local/share/smsmta/pgdata` otherwise), never
under /root. Touches: the file system, child processes (postgres), nothing else.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import URL, make_url

DATABASE_URL_ENV = "SMSMTA_DATABASE_URL"
EMBEDDED_DIR_ENV = "SMSMTA_EMBEDDED_DIR"


def default_embedded_dir() -> Path:
    """Where the embedded PostgreSQL keeps its data when the settings do not say."""
    if from_env := os.environ.get(EMBEDDED_DIR_ENV):
        return Path(from_env)
    if os.geteuid() == 0:
        return Path("/var/lib/smsmta/pgdata")
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "smsmta" / "pgdata"


def normalize_url(url: str | URL) -> URL:
    """Accept postgresql:// and postgres:// URLs; always drive them with psycopg 3."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(
            f"smsmta needs PostgreSQL; the database URL names {parsed.get_backend_name()!r}"
        )
    return parsed.set(drivername="postgresql+psycopg")


def libpq_dsn(url: str | URL) -> str:
    """The URL as a libpq connection string, for raw psycopg connections (COPY, LISTEN)."""
    return normalize_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def embedded(data_dir: str | os.PathLike[str] | None = None) -> Iterator[URL]:
    """Start (or join) the embedded PostgreSQL in `data_dir`; yield its URL.

    Several processes may hold the same data directory; the server stops when the last
    of them leaves.
    """
    import pgserver  # imported here: only the embedded path needs it

    path = Path(data_dir) if data_dir is not None else default_embedded_dir()
    if path.resolve().is_relative_to(Path("/root")) and os.geteuid() == 0:
        raise ValueError(
            f"the embedded PostgreSQL cannot keep its data under /root ({path}): "
            "pgserver would open /root to other users; choose another directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as under systemd or CI: harmless
        warnings.simplefilter("ignore", UserWarning)
        server = pgserver.get_server(path, cleanup_mode="stop")
    try:
        yield normalize_url(server.get_uri())
    finally:
        server.cleanup()


@contextmanager
def database(
    url: str | URL | None, embedded_dir: str | os.PathLike[str] | None = None
) -> Iterator[URL]:
    """The named database, else the environment's, else the embedded one for as long as needed."""
    named = url or os.environ.get(DATABASE_URL_ENV)
    if named:
        yield normalize_url(named)
        return
    with embedded(embedded_dir) as embedded_url:
        yield embedded_url
