"""Which PostgreSQL to use, and the embedded one when none is named.

`SMSMTA_DATABASE_URL`, else the settings' `database.url`, names the database. Where
neither is given, `embedded(path)` starts a private PostgreSQL 16 from the `pgserver`
package (about a second) and stops it when the last process using it lets go, or, when
that process was killed, when its watchdog (smsmta.db.watchdog) sees no holder alive.

As root, pgserver runs the server as a system user `pgserver`, which must traverse every
parent of the data directory, and it opens the read bits of those parents (and of its
own installation's) to everyone. We keep folder modes as they were: a parent the
`pgserver` user cannot traverse (0700, as mkdtemp makes) is refused with a message
naming it, and the bits pgserver added are taken back once the server runs. Only where
the package itself is installed under a closed folder (a clone in /root) is the search
bit alone (o+x, never read) left open, with a warning, since the server must reach its
binaries. The data lives under a directory made for it (`/var/lib/smsmta/pgdata` as
root, `~/.local/share/smsmta/pgdata` otherwise), never under /root.
Touches: the file system, child processes (postgres, the watchdog), nothing else.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import structlog
from sqlalchemy import URL, make_url

from smsmta.db import watchdog

log = structlog.get_logger(__name__)

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
    path = Path(data_dir) if data_dir is not None else default_embedded_dir()
    if path.resolve().is_relative_to(Path("/root")) and os.geteuid() == 0:
        raise ValueError(
            f"the embedded PostgreSQL cannot keep its data under /root ({path}): "
            "pgserver would open /root to other users; choose another directory"
        )
    as_root = os.geteuid() == 0
    if as_root:
        require_traversable(path.resolve())
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as under systemd or CI: harmless
        warnings.simplefilter("ignore", UserWarning)
        import pgserver  # imported here: only the embedded path needs it
        from pgserver._commands import POSTGRES_BIN_PATH

        modes = ancestor_modes([path.resolve(), POSTGRES_BIN_PATH]) if as_root else {}
        server = pgserver.get_server(path, cleanup_mode="stop")
    try:
        if modes:
            with pgserver.PostgresServer._lock:
                restore_modes(modes)
        watchdog.start(path)
        yield normalize_url(server.get_uri())
    finally:
        server.cleanup()
        watchdog.dismiss(path)


SEARCH_BY_OTHERS = stat.S_IXOTH


def require_traversable(data_dir: Path) -> None:
    """Refuse a data directory the `pgserver` system user could not reach."""
    for parent in data_dir.parents:
        if not parent.exists():
            continue  # made below, 0755 by the umask
        mode = parent.stat().st_mode
        if not mode & SEARCH_BY_OTHERS:
            raise ValueError(
                f"the embedded PostgreSQL runs as the system user 'pgserver', which cannot "
                f"enter {parent} (mode {stat.S_IMODE(mode):04o}) on the way to {data_dir}; "
                f"choose a data directory whose parents others may traverse (the default "
                f"is /var/lib/smsmta/pgdata), allow it with 'chmod o+x {parent}', or name "
                f"a database with database.url"
            )


def ancestor_modes(paths: list[Path]) -> dict[Path, int]:
    """The permission bits of every parent folder of `paths`, to be put back later."""
    modes: dict[Path, int] = {}
    for path in paths:
        for parent in path.parents:
            modes.setdefault(parent, stat.S_IMODE(parent.stat().st_mode))
    return modes


def restore_modes(modes: dict[Path, int]) -> None:
    """Take back what pgserver opened; leave only the search bit its binaries need."""
    for folder, before in modes.items():
        now = stat.S_IMODE(folder.stat().st_mode)
        if now == before:
            continue
        keep = before | (now & SEARCH_BY_OTHERS)
        if keep != before:
            log.warning(
                "embedded postgres needs to traverse a closed folder",
                folder=str(folder),
                mode_before=f"{before:04o}",
                mode_now=f"{keep:04o}",
            )
        folder.chmod(keep)


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
