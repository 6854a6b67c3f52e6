"""Starting and stopping the whole stack on one machine, for the demo, benchmarks and tests.

- `server()`: a PostgreSQL server to create databases on: the URL given (or
  SMSMTA_DATABASE_URL's), else an embedded PostgreSQL (pgserver) in a new folder under /tmp;
  `scratch_database()`: a new database on it, migrated if asked, dropped afterwards.
- `Stack`: the services and the SMSC simulator as the real `python -m smsmta.cli <service>`
  processes, each in its own session with its own log file; `check()` raises when one died,
  `stop()` sends SIGTERM in the reverse order of start (each drains and exits; killed after
  60 s) and returns the exit codes.
- `cli_command()`, `service_env()`, `spawn()`: one service started by hand (the command line,
  its environment, both at once) for callers that keep the process themselves;
- `free_port()`, `wait_for_port()`.

Touches: child processes, local ports, databases it creates (and drops), folders under /tmp.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import URL

from smsmta.db import migrate
from smsmta.db.engine import DATABASE_URL_ENV, embedded, libpq_dsn, normalize_url

STOP_TIMEOUT = 60.0


def cli_command(*args: str) -> list[str]:
    """`python -m smsmta.cli *args` with this interpreter: a service as an operator runs it."""
    return [sys.executable, "-m", "smsmta.cli", *args]


def service_env(url: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a service: the database URL (when given), `extra`,
    and no PROMETHEUS_MULTIPROC_DIR (each service sets up its own)."""
    env = {**os.environ, **({DATABASE_URL_ENV: url} if url else {}), **extra}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


def spawn(*args: str, url: str, cwd: Path | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """`python -m smsmta.cli *args` on the database at `url`, started and left running."""
    return subprocess.Popen(cli_command(*args), env=service_env(url), cwd=cwd, **popen)


def free_port() -> int:
    """A TCP port nothing listens on at the moment (127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 30.0, check: Callable[[], None] | None = None
) -> None:
    """Until something accepts connections on 127.0.0.1:`port`; `check` runs between tries."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:g} s")


def embedded_home(prefix: str) -> Path:
    """A new folder under /tmp for an embedded PostgreSQL: mkdtemp makes it 0700, which the
    server's system user (as root) could not traverse; 0711 lets it pass without letting
    anyone list the folder."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o711)
    return folder


@contextlib.contextmanager
def server(url: str | None = None, prefix: str = "smsmta-bench-pg-") -> Iterator[tuple[URL, str]]:
    """(the server's URL, what it is): `url`, else SMSMTA_DATABASE_URL, else an embedded
    PostgreSQL in a new folder (removed after the server stopped)."""
    if url:
        yield normalize_url(url), "the PostgreSQL given (--database-url)"
        return
    if named := os.environ.get(DATABASE_URL_ENV):
        yield normalize_url(named), "the PostgreSQL of SMSMTA_DATABASE_URL"
        return
    folder = embedded_home(prefix)
    try:
        with embedded(folder / "pgdata") as embedded_url:
            yield embedded_url, "embedded PostgreSQL (pgserver, default settings), same machine"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(
    server: URL, prefix: str, *, migrated: bool = False, shield_drop: bool = False
) -> Iterator[URL]:
    """A new database on `server` (both schemas at their heads if `migrated`), dropped after;
    with `shield_drop`, a Ctrl-C during the drop is ignored (call from the main thread)."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = libpq_dsn(server)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name)
    try:
        if migrated:
            for side in migrate.SIDE_NAMES:
                migrate.upgrade(url, side)
        yield url
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if shield_drop else None
        try:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def terminate_with_parent() -> None:
    """In a child before exec: SIGTERM when its parent dies (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class Service:
    """One process of the stack and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Stack:
    """The processes started for one run, all against the database at `url`.

    `logs` is where each process writes `<name>.log`; `app_prefix` names each process's
    PostgreSQL connections (PGAPPNAME "<prefix> <name>"); `die_with_parent` makes the kernel
    send them SIGTERM if this process dies without stopping them.
    """

    folder: Path
    url: str
    logs: Path | None = None
    cwd: Path | None = None
    app_prefix: str | None = None
    die_with_parent: bool = False
    tail_chars: int = 3000
    services: list[Service] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return service_env(self.url)

    def start(self, name: str, *args: str) -> Service:
        """`python -m smsmta.cli *args` in its own session (Ctrl-C reaches us alone)."""
        logs = self.logs or self.folder
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        env = self.env()
        if self.app_prefix is not None:
            env["PGAPPNAME"] = f"{self.app_prefix} {name}"  # PostgreSQL CPU by client
        with log.open("ab") as out:
            process = subprocess.Popen(
                cli_command(*args),
                env=env,
                stdout=out,
                stderr=out,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=terminate_with_parent if self.die_with_parent else None,
            )
        service = Service(name, process, log)
        self.services.append(service)
        return service

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """`python -m smsmta.cli *args` to its end; its output captured."""
        return subprocess.run(
            cli_command(*args),
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            cwd=self.cwd,
            timeout=timeout,
        )

    def check(self) -> None:
        """RuntimeError naming the first process that exited, with the end of its log."""
        for service in self.services:
            if not service.alive():
                raise RuntimeError(
                    f"{service.name} exited with code {service.process.returncode}; "
                    f"the end of {service.log}:\n{service.tail(self.tail_chars)}"
                )

    def wait_for_port(self, port: int, timeout: float = 30.0) -> None:
        wait_for_port(port, timeout, self.check)

    def stop(self) -> dict[str, int | None]:
        """SIGTERM in the reverse order of start (each killed after 60 s); the exit codes."""
        codes = {service.name: service.stop() for service in reversed(self.services)}
        self.services.clear()
        return codes
