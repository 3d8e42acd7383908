"""systemd's notify protocol (``sd_notify``), without libsystemd: ``READY=1`` once the models are loaded and both
transports listen, ``WATCHDOG=1`` from the event loop at half of ``WatchdogSec`` (so a stuck loop gets the service
restarted), ``STOPPING=1`` when the drain begins. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An abstract socket is written '@name'; its address starts with a NUL byte.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        watchdog_us = env.get("WATCHDOG_USEC", "")
        watchdog_pid = env.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_s = int(watchdog_us) / 1e6 if watchdog_us.isdigit() and int(watchdog_us) > 0 and mine else 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, message: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:  # systemd gone: nothing to tell, and no reason to stop serving
            log.warning("sd_notify %s: %s", message.split("=")[0], exc)

    def ready(self, status: str) -> None:
        self.notify(f"READY=1\nSTATUS={status}")
        if self.watchdog_s and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._feed())

    def stopping(self) -> None:
        self.notify("STOPPING=1\nSTATUS=draining")
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _feed(self) -> None:
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)
