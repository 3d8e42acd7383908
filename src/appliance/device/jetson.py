"""A Jetson's telemetry from sysfs and procfs, into a typed :class:`DeviceSample`.

Nodes are found by what they are, not by fixed paths, and found again while missing (on JetPack 7 the GPU's
devfreq node can appear after the service starts; a reader that looked once would report nothing until
restarted):

- GPU: the devfreq device whose ``device/of_node/name`` (or node name) is a Jetson GPU (``ga10b`` on Orin,
  ``gpu`` in newer device trees): ``cur_freq`` / ``max_freq`` in Hz, and the load from its device's ``load`` (or
  ``/sys/devices/platform/gpu.0/load``), in tenths of a percent.
- EMC frequency: bpmp's clock in debugfs, readable by root only; absent for an unprivileged service.
- Thermal zones ``/sys/devices/virtual/thermal/thermal_zone*`` (``type``, ``temp`` in millidegrees); a zone at
  or above its lowest ``passive`` trip point is throttling.
- Power rails: every ``hwmon`` whose ``name`` is ``ina3221``: ``in{N}_label``, ``in{N}_input`` (mV),
  ``curr{N}_input`` (mA); ``NC`` channels and the sum channel are skipped. The board's power is ``VDD_IN`` where
  the module measures it (Orin NX / Nano), else the sum of the rails measured (AGX Orin).
- Memory: ``/proc/meminfo`` (``MemTotal``, ``MemAvailable``, and ``NvMapMemUsed``, what the GPU holds of the
  shared memory, where the L4T kernel reports it).
- Power mode: ``/var/lib/nvpmodel/status`` (``pmode:0002``) named from ``/etc/nvpmodel.conf``
  (``< POWER_MODEL ID=2 NAME=15W >``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .files import Files

#: ``of_node/name`` (or devfreq node suffix) of a Jetson's integrated GPU, Orin's first.
GPU_NAMES = ("ga10b", "gpu", "gv11b", "gp10b", "gb10b")
#: How often, at most, a missing node is looked for again.
REDISCOVER_S = 10.0

_EMC_RATES = ("sys/kernel/debug/bpmp/debug/clk/emc/rate", "sys/kernel/debug/clk/emc/clk_rate")
_POWER_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)")


@dataclass(frozen=True, slots=True)
class Gpu:
    name: str  # the devfreq node, e.g. 17000000.gpu
    load: float | None  # 0..1
    frequency_hz: float | None
    max_frequency_hz: float | None


@dataclass(frozen=True, slots=True)
class ThermalZone:
    name: str  # its type: cpu-thermal, gpu-thermal, tj-thermal, ...
    celsius: float
    throttling: bool | None  # None: the zone has no passive trip point


@dataclass(frozen=True, slots=True)
class Rail:
    name: str  # the INA3221 channel's label: VDD_IN, VDD_GPU_SOC, ...
    volts: float
    amperes: float

    @property
    def watts(self) -> float:
        return self.volts * self.amperes


@dataclass(frozen=True, slots=True)
class Memory:
    total_bytes: int
    available_bytes: int
    gpu_bytes: int | None  # NvMapMemUsed; None where the kernel does not report it


@dataclass(frozen=True, slots=True)
class PowerMode:
    id: int
    name: str  # "" when /etc/nvpmodel.conf does not name it


@dataclass(frozen=True, slots=True)
class DeviceSample:
    jetson: bool
    model: str  # /proc/device-tree/model: "NVIDIA Jetson AGX Orin Developer Kit"; "" elsewhere
    gpu: Gpu | None
    emc_frequency_hz: float | None
    thermal: tuple[ThermalZone, ...]
    rails: tuple[Rail, ...]
    board_power_watts: float | None
    board_power_source: str  # "VDD_IN", "sum of rails", or ""
    memory: Memory | None
    power_mode: PowerMode | None
    uptime_s: float | None = None  # /proc/uptime: seconds since the device booted

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["rails"] = [{**asdict(r), "watts": r.watts} for r in self.rails]
        if not self.jetson:
            doc["note"] = "not a Jetson: no GPU devfreq node, INA3221 power monitor or nvpmodel status found"
        return doc


@dataclass(frozen=True, slots=True)
class _Zone:
    name: str
    temp: Path
    passive_trips: tuple[Path, ...]  # the trip_point_N_temp of each passive trip point


@dataclass(frozen=True, slots=True)
class _Channel:
    label: str
    millivolts: Path
    milliamperes: Path


@dataclass(frozen=True, slots=True)
class _Nodes:
    """What discovery found: the paths read on every sample (names and labels are read once, here)."""

    gpu_devfreq: Path | None
    gpu_load: Path | None
    thermal_zones: tuple[_Zone, ...]
    ina3221: tuple[_Channel, ...]

    @property
    def complete(self) -> bool:
        return self.gpu_devfreq is not None and self.gpu_load is not None and bool(self.thermal_zones)


class DeviceTelemetry:
    """Samples the device. ``root`` is ``/`` on a device and a fake tree in tests; ``clock`` paces rediscovery."""

    def __init__(
        self, root: Path = Path("/"), clock: Callable[[], float] = time.monotonic, rediscover_s: float = REDISCOVER_S
    ) -> None:
        self.files = Files(root)
        self._clock = clock
        self._rediscover_s = rediscover_s
        self._nodes = self._discover()
        self._discovered = clock()
        self._model = (self.files.text(self.files.path("proc/device-tree/model"), missing_ok=True) or "").strip()
        self._mode_names = self._read_mode_names()

    # -- discovery -----------------------------------------------------------------------------

    def _discover(self) -> _Nodes:
        f = self.files
        devfreq, load = None, None
        for node in sorted(f.path("sys/class/devfreq").glob("*")):
            of_name = f.text(node / "device" / "of_node" / "name", missing_ok=True)
            if of_name in GPU_NAMES or node.name.rpartition(".")[2] in GPU_NAMES:
                devfreq = node
                break
        candidates = [devfreq / "device" / "load"] if devfreq else []
        for candidate in [*candidates, f.path("sys/devices/platform/gpu.0/load")]:
            if candidate.is_file():
                load = candidate
                break
        zones = []
        for zone in sorted(f.path("sys/devices/virtual/thermal").glob("thermal_zone*"), key=_zone_number):
            name = f.text(zone / "type", missing_ok=True)
            if name:
                trips = tuple(
                    trip.with_name(trip.name.replace("_type", "_temp"))
                    for trip in sorted(zone.glob("trip_point_*_type"))
                    if f.text(trip, missing_ok=True) == "passive"
                )
                zones.append(_Zone(name, zone / "temp", trips))
        channels = []
        for hwmon in sorted(f.path("sys/class/hwmon").glob("hwmon*")):
            if f.text(hwmon / "name", missing_ok=True) != "ina3221":
                continue
            for label_path in sorted(hwmon.glob("in*_label"), key=lambda p: _channel(p.name)):
                label = f.text(label_path, missing_ok=True)
                if label and label.upper() != "NC" and "sum" not in label.lower():  # not connected; the sum channel
                    n = _channel(label_path.name)
                    channels.append(_Channel(label, hwmon / f"in{n}_input", hwmon / f"curr{n}_input"))
        return _Nodes(devfreq, load, tuple(zones), tuple(channels))

    def _rediscover_if_due(self) -> None:
        if self._nodes.complete:
            return
        now = self._clock()
        if now - self._discovered >= self._rediscover_s:
            self._discovered = now
            self._nodes = self._discover()

    def _read_mode_names(self) -> dict[int, str]:
        text = self.files.text(self.files.path("etc/nvpmodel.conf"), missing_ok=True) or ""
        return {int(m.group(1)): m.group(2) for m in _POWER_MODEL.finditer(text)}

    # -- one sample ----------------------------------------------------------------------------

    def sample(self) -> DeviceSample:
        self._rediscover_if_due()
        nodes = self._nodes
        gpu = self._gpu(nodes)
        rails = self._rails(nodes)
        board, source = _board_power(rails)
        power_mode = self._power_mode()
        return DeviceSample(
            jetson=gpu is not None or bool(nodes.ina3221) or power_mode is not None,
            model=self._model,
            gpu=gpu,
            emc_frequency_hz=self._emc(),
            thermal=self._thermal(nodes),
            rails=rails,
            board_power_watts=board,
            board_power_source=source,
            memory=self._memory(),
            power_mode=power_mode,
            uptime_s=self._uptime(),
        )

    def _uptime(self) -> float | None:
        text = self.files.text(self.files.path("proc/uptime"))
        fields = text.split() if text else []
        try:
            return float(fields[0]) if fields else None
        except ValueError:
            return None

    def _gpu(self, nodes: _Nodes) -> Gpu | None:
        if nodes.gpu_devfreq is None and nodes.gpu_load is None:
            return None
        f = self.files
        load = f.number(nodes.gpu_load) if nodes.gpu_load else None
        if nodes.gpu_load is not None and load is None and not nodes.gpu_load.exists():
            self._nodes = _Nodes(nodes.gpu_devfreq, None, nodes.thermal_zones, nodes.ina3221)  # gone: look again
        current = maximum = None
        if nodes.gpu_devfreq is not None:
            current = f.number(nodes.gpu_devfreq / "cur_freq")
            maximum = f.number(nodes.gpu_devfreq / "max_freq")
        name = nodes.gpu_devfreq.name if nodes.gpu_devfreq is not None else "gpu.0"
        return Gpu(name, None if load is None else min(max(load / 1000.0, 0.0), 1.0), current, maximum)

    def _emc(self) -> float | None:
        for relative in _EMC_RATES:
            path = self.files.path(relative)
            if path.parent.is_dir():
                return self.files.number(path)
        return None

    def _thermal(self, nodes: _Nodes) -> tuple[ThermalZone, ...]:
        f = self.files
        zones = []
        for zone in nodes.thermal_zones:
            milli = f.number(zone.temp)
            if milli is None or milli <= -100_000:  # -256000 and the like: the firmware's "no reading"
                continue
            passive = [t for trip in zone.passive_trips if (t := f.number(trip)) is not None]
            zones.append(ThermalZone(zone.name, milli / 1000.0, milli >= min(passive) if passive else None))
        return tuple(zones)

    def _rails(self, nodes: _Nodes) -> tuple[Rail, ...]:
        rails = []
        for channel in nodes.ina3221:
            millivolts = self.files.number(channel.millivolts)
            milliamperes = self.files.number(channel.milliamperes)
            if millivolts is not None and milliamperes is not None:
                rails.append(Rail(channel.label, millivolts / 1000.0, milliamperes / 1000.0))
        return tuple(rails)

    def _memory(self) -> Memory | None:
        text = self.files.text(self.files.path("proc/meminfo"))
        if text is None:
            return None
        kib: dict[str, int] = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                kib[key.strip()] = int(fields[0])
        if "MemTotal" not in kib or "MemAvailable" not in kib:
            return None
        gpu = kib.get("NvMapMemUsed")
        return Memory(kib["MemTotal"] * 1024, kib["MemAvailable"] * 1024, None if gpu is None else gpu * 1024)

    def _power_mode(self) -> PowerMode | None:
        text = self.files.text(self.files.path("var/lib/nvpmodel/status"), missing_ok=True)
        if text is None:
            return None
        match = re.search(r"pmode:\s*(\d+)", text)
        if match is None:
            return None
        mode = int(match.group(1))
        if mode not in self._mode_names:
            self._mode_names = self._read_mode_names() or self._mode_names
        return PowerMode(mode, self._mode_names.get(mode, ""))


def _board_power(rails: tuple[Rail, ...]) -> tuple[float | None, str]:
    for rail in rails:
        if rail.name.upper() == "VDD_IN":
            return rail.watts, "VDD_IN"
    if rails:
        return math.fsum(r.watts for r in rails), "sum of rails"
    return None, ""


def _channel(name: str) -> int:
    match = re.search(r"\d+", name)
    return int(match.group()) if match else 0


def _zone_number(path: Path) -> int:
    return _channel(path.name)
