"""sd_notify datagrams reach a real Unix socket as systemd would read them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from smsmta.systemd import Notifier


def test_notifications_reach_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000"})
        assert notifier.ready("2 children")
        assert server.recv(4096) == b"READY=1\nSTATUS=2 children"
        assert notifier.keepalive()
        assert server.recv(4096) == b"WATCHDOG=1"
        assert notifier.watchdog_interval() == 5.0
        assert notifier.stopping()
        assert server.recv(4096) == b"STOPPING=1"


def test_abstract_socket_names_are_supported() -> None:
    name = f"smsmta-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("draining")
        assert server.recv(4096) == b"STATUS=draining"


def test_outside_systemd_nothing_happens() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready()
    assert notifier.watchdog_interval() is None
    # a watchdog meant for another process is not ours to feed
    other = Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "100", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval() is None
