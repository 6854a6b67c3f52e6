"""The embedded PostgreSQL's watchdog: the server stops when every process using it is gone.

pgserver stops the server from an `atexit` hook of the last process holding it, which a
SIGKILL, an OOM kill or a crash skips: the postgres of a killed demo or service ran on for
ever. `embedded()` therefore starts this watchdog beside the server (one per data
directory, by a lock file inside it). Once a second it reads the pids pgserver records as
holding the server; when none of them is alive any more, it takes pgserver's lock, checks
again, empties the list and asks the postmaster for a fast shutdown (SIGINT), then exits.
It also exits when the server has stopped by itself, and `dismiss()` (called by the last
holder once it stopped the server) ends it at once rather than at its next look.

Run as `python -m smsmta.db.watchdog PGDATA`: it detaches (forks, new session) and the
command returns at once, so the caller never has a child to reap.
Touches: the data directory's pid files, signals to the postmaster; nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

POLL_SECONDS = 1.0
LOCK_NAME = "smsmta-watchdog.lock"
HANDLES_NAME = ".handle_pids.json"  # pgserver's list of the processes holding the server


def start(pgdata: Path) -> None:
    """Start the watchdog of `pgdata` unless one already watches it; returns at once."""
    subprocess.run(
        [sys.executable, "-m", "smsmta.db.watchdog", str(pgdata)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        check=False,
        timeout=30,
    )


def postmaster_pid(pgdata: Path) -> int | None:
    """The postmaster's pid from postmaster.pid, or None when no server runs there."""
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def holders(pgdata: Path) -> list[int]:
    """The pids pgserver lists as holding the server, whatever the file's state."""
    try:
        values = json.loads((pgdata / HANDLES_NAME).read_text())
    except (OSError, ValueError):
        return []
    return [value for value in values if isinstance(value, int)] if isinstance(values, list) else []


def stop_if_abandoned(pgdata: Path) -> bool:
    """Stop the server when no holder is alive; True when there is nothing left to watch."""
    if postmaster_pid(pgdata) is None:
        return True
    if any(alive(pid) for pid in holders(pgdata)):
        return False
    import pgserver  # the lock pgserver takes to start, join and leave a server

    with pgserver.PostgresServer._lock:
        if any(alive(pid) for pid in holders(pgdata)):
            return False  # a process joined between the two looks
        (pgdata / HANDLES_NAME).write_text("[]")
        pid = postmaster_pid(pgdata)
        if pid is not None:
            os.kill(pid, signal.SIGINT)  # fast shutdown: roll back sessions, checkpoint
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).wait(30)
    return True


def watch(pgdata: Path) -> None:
    with open(pgdata / LOCK_NAME, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another watchdog has this data directory
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        while not stop_if_abandoned(pgdata):
            time.sleep(POLL_SECONDS)


def dismiss(pgdata: Path, wait: float = 5.0) -> None:
    """End the watchdog of `pgdata` if its server no longer runs (no-op otherwise)."""
    if postmaster_pid(pgdata) is not None:
        return  # other holders still use the server: the watchdog stays
    try:
        pid = int((pgdata / LOCK_NAME).read_text() or "0")
        process = psutil.Process(pid)
        if "smsmta.db.watchdog" not in " ".join(process.cmdline()):
            return  # a stale pid now used by something else
        process.terminate()
        process.wait(wait)
    except (OSError, ValueError, psutil.Error):
        return


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m smsmta.db.watchdog PGDATA", file=sys.stderr)
        return 2
    if os.fork():
        return 0  # the caller returns at once; the grandchild is re-parented
    os.setsid()
    if os.fork():
        os._exit(0)
    watch(Path(argv[0]))
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
