"""The boot slots of an A/B device: which one runs, which one boots next, and marking a boot good.

On a Jetson this is ``nvbootctrl`` (meta-tegra's ``tegra-redundant-boot``), with the redundant flash layout
(``USE_REDUNDANT_FLASH_LAYOUT = "1"``): slot 0 is A (rootfs ``APP``), slot 1 is B (``APP_b``). UEFI counts the
boots of a slot that are never marked good and falls back to the other slot by itself; the appliance marks a boot
good only once its health check passes (``appliance update confirm``), instead of NVIDIA's unconditional
``nv_update_verifier.service``, which the image masks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Protocol

SLOTS = ("a", "b")


class SlotError(RuntimeError):
    """The boot-slot tool failed; the message holds its output."""


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"


class BootSlots(Protocol):
    def current(self) -> str:
        """The slot this system booted from: "a" or "b"."""
        ...

    def set_active(self, slot: str) -> None:
        """Boot ``slot`` from the next boot on."""
        ...

    def mark_successful(self) -> None:
        """Mark this boot of the current slot good (the bootloader stops counting failed boots)."""
        ...


class NvBootCtrl:
    """:class:`BootSlots` through NVIDIA's ``nvbootctrl``."""

    def __init__(self, tool: Path = Path("/usr/sbin/nvbootctrl")) -> None:
        self.tool = tool

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [str(self.tool), *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SlotError(f"{self.tool} {' '.join(args)}: {exc}") from None
        if done.returncode != 0:
            raise SlotError(
                f"{self.tool} {' '.join(args)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def current(self) -> str:
        out = self._run("get-current-slot").strip()
        if out not in ("0", "1"):
            raise SlotError(f"{self.tool} get-current-slot said {out!r}, not 0 or 1")
        return SLOTS[int(out)]

    def set_active(self, slot: str) -> None:
        self._run("set-active-boot-slot", str(SLOTS.index(slot)))

    def mark_successful(self) -> None:
        self._run("verify")
