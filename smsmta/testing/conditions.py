"""The conditions a benchmark ran under, described the same way by every bench/ script.

`describe_conditions(title, ...)` returns the block a benchmark prints before its figures:
its title, then one line per condition, the label in a 12-column margin:

    MTA benchmark: queue -> smsmta mta -> simulator (separate processes)
      python      CPython 3.12.3
      cpu         AMD EPYC 7B13, 2 cores, 7.8 GiB RAM, load 0.52 0.61 0.70 at start
      database    embedded PostgreSQL 16 (...), PostgreSQL 16.4, fsync on, synchronous_commit on
      account     window 100, 2 binds per child, ...

The machine's lines are always there; the database's when the benchmark gives a DSN (the
server's version and durability are read from it); then the benchmark's own lines.
Touches: /proc/cpuinfo, the load average, one short connection to the database if given.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterable
from pathlib import Path

import psutil
import psycopg

MARGIN = 12
POSTGRES_SETTINGS = ("server_version", "fsync", "synchronous_commit", "shared_buffers")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows, else "unknown"."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def python_version() -> str:
    """ "CPython 3.12.3"."""
    return f"{platform.python_implementation()} {platform.python_version()}"


def load() -> str:
    """The load averages over 1, 5 and 15 minutes: "0.52 0.61 0.70"."""
    return " ".join(f"{x:.2f}" for x in psutil.getloadavg())


def machine() -> str:
    """CPU model, cores, RAM and the load average now."""
    memory = psutil.virtual_memory().total / 2**30
    return f"{cpu_model()}, {psutil.cpu_count()} cores, {memory:.1f} GiB RAM, load {load()}"


def postgres_settings(dsn: str) -> dict[str, str]:
    """The server's version and durability settings (empty when it cannot be reached)."""
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn,
    ):
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in POSTGRES_SETTINGS}  # type: ignore[index]
    return {}


def postgres(settings: dict[str, str]) -> str:
    """ "PostgreSQL 16.4, fsync on, synchronous_commit on, shared_buffers 128MB"."""
    if not settings:
        return "PostgreSQL (not reachable)"
    return (
        f"PostgreSQL {settings['server_version']}, fsync {settings['fsync']}, "
        f"synchronous_commit {settings['synchronous_commit']}, "
        f"shared_buffers {settings['shared_buffers']}"
    )


def line(label: str, value: str) -> str:
    return f"  {label:<{MARGIN}}{value}"


def describe_conditions(
    title: str,
    *,
    database: str | None = None,
    dsn: str | None = None,
    rows: Iterable[tuple[str, str]] = (),
) -> str:
    """The conditions block: `title`, python, cpu, database (`database` says what the server
    is, `dsn` reaches it for its version and settings), then the benchmark's `rows`."""
    lines = [title, line("python", python_version()), line("cpu", f"{machine()} at start")]
    if database is not None or dsn is not None:
        parts = [database] if database else []
        if dsn is not None:
            parts.append(postgres(postgres_settings(dsn)))
        lines.append(line("database", ", ".join(parts)))
    lines += [line(label, value) for label, value in rows]
    return "\n".join(lines)


def postmaster_pid(dsn: str) -> int | None:
    """The PostgreSQL server's pid, when its data directory is readable from here."""
    with (
        contextlib.suppress(psycopg.Error, OSError, ValueError, TypeError),
        psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn,
    ):
        data_directory = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        return int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    return None
