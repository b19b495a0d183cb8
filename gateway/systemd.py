"""systemd integration: READY once serving, STATUS lines, and a watchdog tied to the engine.

With ``Type=notify`` systemd starts dependants only after READY=1, and with
``WatchdogSec=`` it restarts a gateway whose engine loop stopped turning (a hung disk,
a deadlock) even though the process is still alive. Outside systemd (no
``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os

import sdnotify


class Systemd:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        # ping at half the interval systemd waits, as sd_watchdog_enabled(3) advises
        self.watchdog_s = int(usec) / 2e6 if usec.isdigit() and mine and self.enabled else None

    def notify(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def ping(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
