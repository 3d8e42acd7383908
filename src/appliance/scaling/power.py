"""Power mode stepping: the daemon's side (when to step) and root's side (apply a request, if allowed).

The daemon runs unprivileged. It writes the mode it asks for to ``/run/appliance-autoscaler/power-mode``;
``appliance-power-mode.path`` then starts ``appliance-power-mode.service`` (root), which runs
``appliance power-mode``: it reads the request, applies it with ``nvpmodel -m N`` only when the mode is one
``autoscaler.toml``'s ``[power] modes`` lists, and refuses anything else. So the privileged path can do exactly
one thing, and only with the values the root-owned configuration allows.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.files import write_atomically
from .config import ConfigError, PowerPolicy, load_config

log = logging.getLogger("appliance.autoscaler")

REQUEST_FILE = Path("/run/appliance-autoscaler/power-mode")
_MAX_REQUEST = 16  # bytes: a mode number and a newline


@dataclass(frozen=True, slots=True)
class PowerStep:
    current: int
    desired: int
    reason: str
    at_max: bool = False


class PowerStepper:
    """Up one mode when the GPU load stays above ``up_gpu_load`` for ``up_after_s``, down one when it stays below
    ``down_gpu_load`` for ``down_after_s``; between the two is a dead band, which restarts both clocks."""

    def __init__(self, policy: PowerPolicy) -> None:
        self.policy = policy
        self._above_since: float | None = None
        self._below_since: float | None = None

    def decide(self, now: float, gpu_load: float | None, mode: int | None) -> PowerStep | None:
        """A step to take now, or None. No GPU load or an unknown current mode: no step."""
        p = self.policy
        if gpu_load is None or mode is None or mode not in p.modes:
            self._above_since = self._below_since = None
            return None
        if gpu_load > p.up_gpu_load:
            self._below_since = None
            self._above_since = now if self._above_since is None else self._above_since
        elif gpu_load < p.down_gpu_load:
            self._above_since = None
            self._below_since = now if self._below_since is None else self._below_since
        else:
            self._above_since = self._below_since = None
            return None
        index = p.modes.index(mode)
        if self._above_since is not None and now - self._above_since >= p.up_after_s:
            self._above_since = None
            if index + 1 == len(p.modes):
                return PowerStep(mode, mode, f"GPU load {gpu_load:.2f} above {p.up_gpu_load:g}: at the top mode", True)
            return PowerStep(
                mode, p.modes[index + 1], f"GPU load above {p.up_gpu_load:g} for {p.up_after_s:g} s ({gpu_load:.2f})"
            )
        if self._below_since is not None and now - self._below_since >= p.down_after_s and index > 0:
            self._below_since = None
            return PowerStep(
                mode,
                p.modes[index - 1],
                f"GPU load below {p.down_gpu_load:g} for {p.down_after_s:g} s ({gpu_load:.2f})",
            )
        return None


def request_mode(mode: int, path: Path = REQUEST_FILE) -> None:
    """The daemon's side: ask for ``mode`` (appliance-power-mode.path applies it). OSError when it cannot."""
    write_atomically(path, f"{mode}\n")


def apply_request(config_path: Path, request_path: Path, nvpmodel: Path) -> int:
    """Root's side (``appliance power-mode``): apply the requested mode when the configuration allows it.

    Returns the exit status: 0 applied (or already in force), 2 refused (the message says why), 1 nvpmodel
    failed."""
    try:
        policy = load_config(config_path).power
    except ConfigError as exc:
        log.error("power mode request refused: %s", exc)
        return 2
    try:
        with request_path.open("rb") as f:
            raw = f.read(_MAX_REQUEST + 1)
    except OSError as exc:
        log.error("power mode request refused: %s: %s", request_path, exc.strerror or exc)
        return 2
    text = raw.decode("ascii", "replace").strip()
    if len(raw) > _MAX_REQUEST or not text.isdigit():
        log.error("power mode request refused: %s: expected a mode number, got %r", request_path, text[:16])
        return 2
    mode = int(text)
    if not policy.enabled:
        log.error("power mode request refused: %s: [power] enabled is false", config_path)
        return 2
    if mode not in policy.modes:
        log.error("power mode request refused: mode %d is not in %s [power] modes %s", mode, config_path, policy.modes)
        return 2
    # stdin closed: where a mode change needs a reboot, nvpmodel asks, reads no answer, and changes nothing.
    try:
        done = subprocess.run(
            [str(nvpmodel), "-m", str(mode)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("nvpmodel -m %d failed: %s", mode, exc)
        return 1
    output = " ".join((done.stdout + done.stderr).split())[:500]
    if done.returncode != 0:
        log.error("nvpmodel -m %d failed (exit %d): %s", mode, done.returncode, output)
        return 1
    log.info("power mode %d applied%s", mode, f": {output}" if output else "")
    return 0
