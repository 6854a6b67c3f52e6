"""systemd notifications: readiness, watchdog keep-alives, stopping, status text.

Under a `Type=notify` unit, systemd sets NOTIFY_SOCKET and, with `WatchdogSec=`,
WATCHDOG_USEC; elsewhere (a terminal, the tests, docker) both are absent and every call
here does nothing. The protocol is one datagram of `KEY=value` lines to that socket
(sd_notify(3)); a socket name starting with `@` is in the abstract namespace.

`Notifier.ready()` says the service is up; `watchdog_interval()` is half the watchdog
period, the rhythm at which `keepalive()` must be called (from the event loop, so a
stuck loop stops the keep-alives and systemd restarts the service); `stopping()` and
`status(text)` keep `systemctl status` informative. Touches: one Unix datagram socket.
"""

from __future__ import annotations

import asyncio
import os
import socket


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_usec = int(usec) if usec.isdigit() and mine else 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send `KEY=value` lines; False when not under systemd or the send failed."""
        if self.address is None:
            return False
        address = self.address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall("\n".join(lines).encode())
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def keepalive(self) -> bool:
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between keep-alives (half the watchdog period), None when off."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None


async def keep_alive(notifier: Notifier) -> None:
    """Feed the watchdog from the event loop until cancelled (nothing when it is off)."""
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    while True:
        notifier.keepalive()
        await asyncio.sleep(interval)
