"""The state of the appliance's systemd units, read with ``systemctl show`` (what the panel's Overview shows).

``systemctl show`` asks the manager over D-Bus, which lets an unprivileged user read any unit's properties: the
sandboxed service needs no privilege for it. One call reads every unit; its answer is kept for
:data:`CACHE_S`, so any number of open panels cost one ``systemctl`` a few seconds. Where systemd does not run
(a container, a laptop) the answer says so instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

CACHE_S = 3.0
TIMEOUT_S = 5.0
PROPERTIES = (
    "Id",
    "Description",
    "LoadState",
    "ActiveState",
    "SubState",
    "Result",
    "UnitFileState",
    "NRestarts",
    "ActiveEnterTimestamp",
    "StateChangeTimestamp",
    "MemoryCurrent",
)
_NO_VALUE = ("", "[not set]", "n/a")


@dataclass(frozen=True, slots=True)
class UnitState:
    """One unit as systemd sees it. ``load`` is ``not-found`` for a unit this image does not have."""

    name: str
    description: str
    load: str  # loaded | not-found | masked | error
    active: str  # active | inactive | failed | activating | deactivating | reloading
    sub: str  # running | exited | dead | waiting | start | auto-restart ...
    result: str  # success | exit-code | signal | timeout | watchdog | oom-kill ...
    enabled: str  # enabled | disabled | static | masked | "" (no unit file)
    restarts: int | None  # NRestarts: services only
    since: float | None  # seconds since the epoch of the last state change
    memory_bytes: int | None

    @staticmethod
    def unknown(name: str) -> UnitState:
        """A unit whose state could not be read."""
        return UnitState(name, "", "unknown", "unknown", "", "", "", None, None, None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int(text: str) -> int | None:
    # MemoryCurrent is 2^64-1 ("[not set]" in newer systemd) when memory accounting is off
    return int(text) if text.isdigit() and int(text) < 2**63 else None


def _timestamp(text: str) -> float | None:
    """``--timestamp=unix`` writes ``@1764770000``; no value: never."""
    if text.startswith("@") and text[1:].isdigit() and int(text[1:]) > 0:
        return float(text[1:])
    return None


def parse_show(text: str, names: Sequence[str]) -> list[UnitState]:
    """``systemctl show --timestamp=unix -p ... UNIT...``: one block of ``Key=value`` lines per unit, in the order
    asked, blocks separated by an empty line. A unit with no block reads as unknown."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        blocks.append(current)
    by_id = {b.get("Id", ""): b for b in blocks}
    states = []
    for i, name in enumerate(names):
        block = by_id.get(name) or (blocks[i] if i < len(blocks) else {})

        def get(key: str, block: dict[str, str] = block) -> str:
            value = block.get(key, "")
            return "" if value in _NO_VALUE else value

        since = _timestamp(get("StateChangeTimestamp")) or _timestamp(get("ActiveEnterTimestamp"))
        states.append(
            UnitState(
                name=name,
                description=get("Description"),
                load=get("LoadState") or "unknown",
                active=get("ActiveState") or "unknown",
                sub=get("SubState"),
                result=get("Result"),
                enabled=get("UnitFileState"),
                restarts=_int(get("NRestarts")),
                since=since,
                memory_bytes=_int(get("MemoryCurrent")),
            )
        )
    return states


@dataclass(frozen=True, slots=True)
class UnitsReport:
    """Every unit asked for; where systemd cannot be asked, each unit as unknown and why (``error``)."""

    units: list[UnitState]
    error: str
    time: float

    def to_json(self) -> dict[str, Any]:
        return {"units": [u.to_json() for u in self.units], "error": self.error, "time": round(self.time, 3)}


class Units:
    """Reads the state of ``names`` with ``systemctl``, at most once every :data:`CACHE_S`."""

    def __init__(self, names: Sequence[str], systemctl: str = "systemctl") -> None:
        self.names = list(names)
        self._systemctl = systemctl
        self._last: UnitsReport | None = None
        self._lock = asyncio.Lock()

    async def report(self) -> UnitsReport:
        async with self._lock:  # concurrent panels wait for the one call in progress
            now = time.time()
            if self._last is None or now - self._last.time >= CACHE_S:
                self._last = await self._read(now)
            return self._last

    async def _read(self, now: float) -> UnitsReport:
        if not self.names:
            return UnitsReport([], "", now)
        shown = await self._show(now)
        if isinstance(shown, UnitsReport):
            return shown
        return UnitsReport([UnitState.unknown(n) for n in self.names], shown, now)

    async def _show(self, now: float) -> UnitsReport | str:
        """The report, or why there is none."""
        argv = [self._systemctl, "show", "--timestamp=unix", "--no-pager", "-p", ",".join(PROPERTIES), "--"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, *self.names, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            return f"cannot run {self._systemctl}: {exc.strerror}"
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"systemctl show gave no answer in {TIMEOUT_S:.0f} s"
        text = out.decode(errors="replace")
        # In a chroot (or with systemd offline) systemctl ignores "show" and still exits 0, printing nothing
        if proc.returncode != 0 or "Id=" not in text:
            said = err.decode(errors="replace").strip().splitlines()
            why = said[0] if said else f"systemctl show exited {proc.returncode}, saying nothing"
            return f"systemd is not reachable: {why}"
        return UnitsReport(parse_show(text, self.names), "", now)
