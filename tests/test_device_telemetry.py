"""Device telemetry against FAKE sysfs trees laid out as AGX Orin, Orin NX and Orin Nano have them
(tests/support/fake_jetson_sysfs.py), a machine that is not a Jetson, a GPU node that appears after start, files
holding garbage; and on a real server: ``/metrics`` and ``GET /v2/device``, behind auth."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from appliance.device.jetson import DeviceTelemetry
from appliance.device.metrics import DeviceMetrics
from tests.support.fake_jetson_sysfs import AGX_ORIN, MODULES, ORIN_NANO, ORIN_NX, add_fake_gpu, write_fake_jetson


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_agx_orin(tmp_path: Path):
    s = DeviceTelemetry(write_fake_jetson(tmp_path, AGX_ORIN)).sample()
    assert s.jetson and s.model == "NVIDIA Jetson AGX Orin Developer Kit"
    assert s.gpu is not None and s.gpu.name == "17000000.gpu"
    assert s.gpu.load == pytest.approx(0.452) and s.gpu.frequency_hz == 1_300_500_000
    # NC channels and the sum channel are not rails; AGX Orin measures no VDD_IN: the board is the rails' sum
    assert [r.name for r in s.rails] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]
    assert s.rails[0].volts == pytest.approx(5.04) and s.rails[0].amperes == pytest.approx(1.2)
    assert s.board_power_source == "sum of rails"
    assert s.board_power_watts == pytest.approx(5.04 * 1.2 + 5.04 * 0.8 + 5.0 * 1.0 + 5.0 * 0.2)
    zones = {z.name: z for z in s.thermal}
    assert "cv0-thermal" not in zones  # -256 degrees: no reading
    assert zones["cpu-thermal"].celsius == pytest.approx(47.5) and zones["cpu-thermal"].throttling is None
    assert zones["tj-thermal"].throttling is True  # 99.5 >= its passive trip point, 99
    assert s.memory is not None and s.memory.gpu_bytes == 2_000_000 * 1024
    assert s.power_mode is not None and (s.power_mode.id, s.power_mode.name) == (3, "MODE_50W")


@pytest.mark.parametrize("module", [ORIN_NX, ORIN_NANO], ids=["orin-nx", "orin-nano"])
def test_orin_nx_and_nano_measure_vdd_in(tmp_path: Path, module: Any):
    s = DeviceTelemetry(write_fake_jetson(tmp_path, module)).sample()
    assert s.gpu is not None and s.gpu.load == pytest.approx(module.gpu_load / 1000)
    assert s.gpu.frequency_hz == module.gpu_hz and s.gpu.max_frequency_hz == module.gpu_max_hz
    assert [r.name for r in s.rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    vdd_in = module.monitors[0][0]
    assert s.board_power_source == "VDD_IN"
    assert s.board_power_watts == pytest.approx(vdd_in[1] / 1000 * vdd_in[2] / 1000)
    assert all(z.throttling is False for z in s.thermal if z.name == "tj-thermal")
    assert s.power_mode is not None and s.power_mode.name == dict(module.power_models)[module.power_mode]


def test_orin_nano_without_nvmap_in_meminfo_has_no_gpu_memory(tmp_path: Path):
    s = DeviceTelemetry(write_fake_jetson(tmp_path, ORIN_NANO)).sample()
    assert s.memory is not None and s.memory.total_bytes == 7_600_000 * 1024 and s.memory.gpu_bytes is None


def test_not_a_jetson_reports_so_and_carries_on(tmp_path: Path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1000 kB\nMemAvailable: 600 kB\n")
    s = DeviceTelemetry(tmp_path).sample()
    assert not s.jetson and s.gpu is None and s.rails == () and s.power_mode is None
    assert s.memory is not None and s.memory.available_bytes == 600 * 1024
    assert s.to_json()["note"].startswith("not a Jetson")
    text = _exposition(DeviceMetrics(DeviceTelemetry(tmp_path)))
    assert "appliance_device_jetson 0.0" in text
    assert "appliance_device_gpu" not in text and "appliance_device_rail" not in text  # absent, never 0


def test_a_gpu_node_that_appears_after_start_is_found(tmp_path: Path):
    """JetPack 7 can create the GPU's devfreq node after the service started (jetson-stats #889 read 0 until
    restarted): discovery runs again, at most every rediscover_s, while a node is missing."""
    write_fake_jetson(tmp_path, AGX_ORIN, gpu=False)
    clock = Clock()
    telemetry = DeviceTelemetry(tmp_path, clock=clock, rediscover_s=10)
    assert telemetry.sample().gpu is None
    add_fake_gpu(tmp_path, AGX_ORIN)
    clock.now += 5
    assert telemetry.sample().gpu is None  # not looked for again yet
    clock.now += 5
    gpu = telemetry.sample().gpu
    assert gpu is not None and gpu.load == pytest.approx(0.452)


def test_garbage_and_missing_files_leave_that_metric_out_and_log_once(tmp_path: Path, caplog: Any):
    write_fake_jetson(tmp_path, ORIN_NX)
    (tmp_path / "sys/class/hwmon/hwmon1/in2_input").write_text("garbage\n")
    (tmp_path / "sys/devices/virtual/thermal/thermal_zone0/temp").unlink()
    telemetry = DeviceTelemetry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="appliance.device.files"):
        for _ in range(3):
            s = telemetry.sample()
    assert [r.name for r in s.rails] == ["VDD_IN", "VDD_SOC"]
    assert [z.name for z in s.thermal] == ["gpu-thermal", "tj-thermal"]
    assert s.gpu is not None and s.power_mode is not None  # the rest carries on
    messages = [r.getMessage() for r in caplog.records]
    assert sum("in2_input" in m and "not a number" in m for m in messages) == 1
    assert sum("thermal_zone0/temp" in m and "missing" in m for m in messages) == 1


def _exposition(collector: DeviceMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_prometheus_metrics(tmp_path: Path):
    text = _exposition(DeviceMetrics(DeviceTelemetry(write_fake_jetson(tmp_path, ORIN_NX))))
    assert "appliance_device_jetson 1.0" in text
    assert "appliance_device_gpu_load_ratio 1.0" in text
    assert "appliance_device_gpu_frequency_hertz 9.18e+08" in text
    assert 'appliance_device_rail_power_watts{rail="VDD_IN"} 12.0' in text
    assert 'appliance_device_board_power_watts{source="VDD_IN"} 12.0' in text
    assert 'appliance_device_temperature_celsius{zone="gpu-thermal"} 55.5' in text
    assert 'appliance_device_thermal_throttling{zone="tj-thermal"} 0.0' in text
    assert 'appliance_device_memory_bytes{kind="gpu"} 1.536e+09' in text
    assert 'appliance_device_power_mode{id="0",name="MAXN"} 1.0' in text
    assert "appliance_device_emc_frequency_hertz" not in text  # debugfs: root only, not in the tree


def test_scrapes_close_together_share_one_sample(tmp_path: Path):
    write_fake_jetson(tmp_path, ORIN_NX)
    clock = Clock()
    metrics = DeviceMetrics(DeviceTelemetry(tmp_path), clock=clock)
    first = metrics.sample()
    (tmp_path / "sys/devices/platform/bus@0/17000000.ga10b/load").write_text("250\n")
    assert metrics.sample() is first
    clock.now += 1
    gpu = metrics.sample().gpu
    assert gpu is not None and gpu.load == pytest.approx(0.25)


APPLIANCE = [sys.executable, "-m", "appliance.cli"]


@pytest.mark.parametrize("module_name", sorted(MODULES))
def test_server_exports_the_device(demo_repo: Path, tmp_path: Path, server_factory: Any, module_name: str):
    root = write_fake_jetson(tmp_path / "device", MODULES[module_name])
    keys_file = tmp_path / "keys.json"
    read_key = subprocess.run(
        [*APPLIANCE, "keys", "create", "--keys-file", str(keys_file), "--role", "read", "--name", "dash"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    server = server_factory(demo_repo, "--device-root", str(root), "--auth", "true", "--keys-file", str(keys_file))
    with httpx.Client(base_url=server.base, timeout=10) as client:
        assert client.get("/v2/device").status_code == 401
        doc = client.get("/v2/device", headers={"Authorization": f"Bearer {read_key}"}).json()
        assert doc["jetson"] is True and doc["model"] == MODULES[module_name].model
        assert doc["gpu"]["load"] == pytest.approx(MODULES[module_name].gpu_load / 1000)
        assert {r["name"] for r in doc["rails"]} >= {"VDD_IN"} or doc["board_power_source"] == "sum of rails"
        metrics = client.get("/metrics").text  # loopback: open by default
        assert "appliance_device_gpu_load_ratio" in metrics and "appliance_device_board_power_watts" in metrics
        assert "appliance_request_success_total" in metrics  # beside the serving metrics


def test_server_with_device_telemetry_off(demo_repo: Path, tmp_path: Path, server_factory: Any):
    root = write_fake_jetson(tmp_path / "device", ORIN_NX)
    server = server_factory(demo_repo, "--device-root", str(root), "--device-telemetry", "false")
    with httpx.Client(base_url=server.base, timeout=10) as client:
        response = client.get("/v2/device")
        assert response.status_code == 400 and "device telemetry is off" in response.json()["error"]
        assert "appliance_device_" not in client.get("/metrics").text
    shutil.rmtree(root)
