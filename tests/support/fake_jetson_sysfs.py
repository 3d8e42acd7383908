"""FAKE Jetson sysfs / procfs trees: the files device telemetry reads, laid out as AGX Orin, Orin NX and Orin Nano
have them, written under a temporary root. Fakes for hardware this machine lacks; the values are plausible, not
recorded from one device. Two GPU layouts occur in the field and both are here: the devfreq node named after the
GPU (``17000000.ga10b``, its device holding ``load``, JetPack 5) and the one named ``17000000.gpu`` with the load
under ``/sys/devices/platform/gpu.0`` (JetPack 6 and later)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FakeModule:
    model: str
    gpu_node: str  # the devfreq node's name
    gpu_load_on_platform: bool  # load under /sys/devices/platform/gpu.0 (JetPack 6+), else the GPU device's own
    gpu_load: int  # tenths of a percent
    gpu_hz: int
    gpu_max_hz: int
    monitors: tuple[tuple[tuple[str, int, int], ...], ...]  # per INA3221: (label, mV, mA) per channel 1..3
    zones: tuple[tuple[str, int], ...]  # (type, millidegrees)
    power_models: tuple[tuple[int, str], ...]
    power_mode: int
    meminfo_kib: dict[str, int] = field(default_factory=dict)


AGX_ORIN = FakeModule(
    model="NVIDIA Jetson AGX Orin Developer Kit",
    gpu_node="17000000.gpu",
    gpu_load_on_platform=True,
    gpu_load=452,
    gpu_hz=1_300_500_000,
    gpu_max_hz=1_300_500_000,
    monitors=(
        (("VDD_GPU_SOC", 5040, 1200), ("VDD_CPU_CV", 5040, 800), ("VIN_SYS_5V0", 5000, 1000)),
        (("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5000, 200), ("NC", 0, 0)),
    ),
    zones=(
        ("cpu-thermal", 47_500),
        ("gpu-thermal", 46_200),
        ("cv0-thermal", -256_000),  # the CV cluster powered off: the firmware's "no reading"
        ("soc0-thermal", 45_000),
        ("tj-thermal", 99_500),  # hot: above its passive trip point
        ("tboard-thermal", 35_000),
    ),
    power_models=((0, "MAXN"), (1, "MODE_15W"), (2, "MODE_30W"), (3, "MODE_50W")),
    power_mode=3,
    meminfo_kib={"MemTotal": 65_000_000, "MemAvailable": 50_000_000, "NvMapMemUsed": 2_000_000},
)

ORIN_NX = FakeModule(
    model="NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
    gpu_node="17000000.ga10b",
    gpu_load_on_platform=False,
    gpu_load=1000,
    gpu_hz=918_000_000,
    gpu_max_hz=918_000_000,
    monitors=((("VDD_IN", 5000, 2400), ("VDD_CPU_GPU_CV", 5000, 900), ("VDD_SOC", 5000, 500)),),
    zones=(("cpu-thermal", 52_000), ("gpu-thermal", 55_500), ("tj-thermal", 56_000)),
    power_models=((0, "MAXN"), (1, "10W"), (2, "15W"), (3, "25W")),
    power_mode=0,
    meminfo_kib={"MemTotal": 16_000_000, "MemAvailable": 9_000_000, "NvMapMemUsed": 1_500_000},
)

ORIN_NANO = FakeModule(
    model="NVIDIA Jetson Orin Nano Developer Kit",
    gpu_node="17000000.gpu",
    gpu_load_on_platform=True,
    gpu_load=0,
    gpu_hz=306_000_000,
    gpu_max_hz=1_020_000_000,
    monitors=((("VDD_IN", 5000, 1100), ("VDD_CPU_GPU_CV", 5000, 300), ("VDD_SOC", 5000, 400)),),
    zones=(("cpu-thermal", 41_000), ("gpu-thermal", 40_500), ("tj-thermal", 41_500)),
    power_models=((0, "15W"), (1, "7W"), (2, "MAXN_SUPER")),
    power_mode=1,
    meminfo_kib={"MemTotal": 7_600_000, "MemAvailable": 5_000_000},  # a kernel without NvMapMemUsed
)

MODULES = {"agx-orin": AGX_ORIN, "orin-nx": ORIN_NX, "orin-nano": ORIN_NANO}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_fake_jetson(root: Path, module: FakeModule, *, gpu: bool = True) -> Path:
    """Write ``module``'s tree under ``root``; without ``gpu``, everything but the GPU's nodes (see
    :func:`add_fake_gpu`). Returns ``root``."""
    _write(root / "proc/device-tree/model", module.model + "\0")
    _write(root / "proc/uptime", "356735.47 1390000.12\n")  # 4 days, 3 hours, 5 minutes
    _write(root / "proc/meminfo", "".join(f"{k}: {v:>12} kB\n" for k, v in module.meminfo_kib.items()))
    for n, (kind, milli) in enumerate(module.zones):
        zone = root / f"sys/devices/virtual/thermal/thermal_zone{n}"
        _write(zone / "type", kind + "\n")
        _write(zone / "temp", f"{milli}\n")
        if kind == "tj-thermal":
            _write(zone / "trip_point_0_type", "passive\n")
            _write(zone / "trip_point_0_temp", "99000\n")
            _write(zone / "trip_point_1_type", "critical\n")
            _write(zone / "trip_point_1_temp", "104500\n")
    hwmon = root / "sys/class/hwmon"
    _write(hwmon / "hwmon0/name", "tegra_soctherm\n")  # another hwmon: not a power monitor
    for i, channels in enumerate(module.monitors, start=1):
        monitor = hwmon / f"hwmon{i}"
        _write(monitor / "name", "ina3221\n")
        for n, (label, millivolts, milliamperes) in enumerate(channels, start=1):
            _write(monitor / f"in{n}_label", label + "\n")
            _write(monitor / f"in{n}_input", f"{millivolts}\n")
            _write(monitor / f"curr{n}_input", f"{milliamperes}\n")
        total = sum(c[2] for c in channels)
        _write(monitor / "in7_label", "sum of shunt voltages\n")  # the sum channel
        _write(monitor / "in7_input", "40\n")
        _write(monitor / "curr7_input", f"{total}\n")
    _write(root / "var/lib/nvpmodel/status", f"pmode:{module.power_mode:04d} fmode:fanNull\n")
    _write(
        root / "etc/nvpmodel.conf",
        "".join(f"< POWER_MODEL ID={i} NAME={name} >\nCPU_ONLINE CORE_0 1\n\n" for i, name in module.power_models),
    )
    if gpu:
        add_fake_gpu(root, module)
    return root


def add_fake_gpu(root: Path, module: FakeModule) -> None:
    """The GPU's device and devfreq nodes, linked as the kernel links them (which can happen after boot)."""
    device = root / "sys/devices/platform/bus@0" / module.gpu_node
    name = module.gpu_node.rpartition(".")[2]
    _write(device / "of_node/name", name + "\0")
    freq = device / "devfreq" / module.gpu_node
    _write(freq / "cur_freq", f"{module.gpu_hz}\n")
    _write(freq / "max_freq", f"{module.gpu_max_hz}\n")
    _write(freq / "min_freq", "306000000\n")
    os.symlink("../..", freq / "device")  # devfreq/<node>/device -> the GPU's device
    if module.gpu_load_on_platform:
        _write(root / "sys/devices/platform/gpu.0/load", f"{module.gpu_load}\n")
    else:
        _write(device / "load", f"{module.gpu_load}\n")
    link = root / "sys/class/devfreq" / module.gpu_node
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(freq, link.parent), link)
