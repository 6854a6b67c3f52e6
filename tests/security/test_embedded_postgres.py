"""The embedded PostgreSQL keeps folder modes as they were and dies with its owners.

Issue 14: pgserver (as root) made every 0700 parent of the data directory 0755, and the
server of a SIGKILLed demo or service ran on for ever (pgserver stops it from an atexit
hook). Now a parent the server's system user cannot traverse is refused with a message
naming it, modes are put back once the server runs, and a watchdog stops a server none
of whose holders is alive.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smsmta.db import watchdog
from smsmta.db.engine import embedded

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="pgserver changes modes as root only")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@as_root
def test_a_closed_parent_is_refused_and_left_closed(embedded_tmp: Path) -> None:
    closed = embedded_tmp / "private"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    refused = pytest.raises(ValueError, match=f"cannot enter {closed} \\(mode 0700\\)")
    with refused, embedded(closed / "db" / "pgdata"):
        pass
    assert mode(closed) == 0o700
    assert not (closed / "db" / "pgdata" / "PG_VERSION").exists()


OWNER = """
import sys, time
from smsmta.db.engine import embedded
with embedded(sys.argv[1]) as url:
    print(url.render_as_string(hide_password=False), flush=True)
    time.sleep(600)
"""


@pytest.mark.timeout(120)
def test_modes_are_kept_and_the_server_dies_with_its_killed_owner(embedded_tmp: Path) -> None:
    searchable = embedded_tmp / "searchable"
    searchable.mkdir()
    searchable.chmod(0o711)  # others may pass, not list: pgserver would make it 0755
    pgdata = searchable / "pgdata"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(pgdata)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith("postgresql+psycopg://")
        assert mode(searchable) == 0o711
        assert mode(embedded_tmp) == 0o711
        postmaster = watchdog.postmaster_pid(pgdata)
        assert postmaster is not None
        owner.send_signal(signal.SIGKILL)  # no atexit, no cleanup
        owner.wait(10)
        deadline = time.monotonic() + 30
        while watchdog.alive(postmaster) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not watchdog.alive(postmaster), "the server of a killed owner still runs"
    finally:
        owner.kill()
        owner.wait(10)
