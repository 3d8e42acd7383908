"""The device's telemetry as Prometheus metrics, beside the serving metrics (``appliance_device_*``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from .jetson import DeviceSample, DeviceTelemetry

#: Scrapes closer together than this share one sample (a panel and Prometheus both polling cost one read).
MIN_SAMPLE_INTERVAL_S = 0.5


class DeviceMetrics:
    """A Prometheus collector (``registry.register(DeviceMetrics(telemetry))``) and the latest sample for the API.
    A value the device does not report is left out, never exported as 0."""

    def __init__(self, telemetry: DeviceTelemetry, clock: Callable[[], float] = time.monotonic) -> None:
        self.telemetry = telemetry
        self._clock = clock
        self._last: DeviceSample | None = None
        self._at = -float("inf")

    def sample(self) -> DeviceSample:
        now = self._clock()
        if self._last is None or now - self._at >= MIN_SAMPLE_INTERVAL_S:
            self._last, self._at = self.telemetry.sample(), now
        return self._last

    def collect(self) -> Iterator[Metric]:
        s = self.sample()
        yield GaugeMetricFamily("appliance_device_jetson", "1 on a Jetson, 0 elsewhere", value=int(s.jetson))
        if s.gpu is not None:
            if s.gpu.load is not None:
                yield GaugeMetricFamily("appliance_device_gpu_load_ratio", "GPU load, 0 to 1", value=s.gpu.load)
            if s.gpu.frequency_hz is not None:
                yield GaugeMetricFamily(
                    "appliance_device_gpu_frequency_hertz", "GPU clock now", value=s.gpu.frequency_hz
                )
            if s.gpu.max_frequency_hz is not None:
                yield GaugeMetricFamily(
                    "appliance_device_gpu_max_frequency_hertz",
                    "GPU clock ceiling (devfreq max_freq: lowered by the power mode or thermal capping)",
                    value=s.gpu.max_frequency_hz,
                )
        if s.emc_frequency_hz is not None:
            yield GaugeMetricFamily(
                "appliance_device_emc_frequency_hertz", "memory controller clock", value=s.emc_frequency_hz
            )
        if s.thermal:
            temperature = GaugeMetricFamily("appliance_device_temperature_celsius", "thermal zone", labels=["zone"])
            throttling = GaugeMetricFamily(
                "appliance_device_thermal_throttling",
                "1 while the zone is at or above its lowest passive trip point",
                labels=["zone"],
            )
            for zone in s.thermal:
                temperature.add_metric([zone.name], zone.celsius)
                if zone.throttling is not None:
                    throttling.add_metric([zone.name], int(zone.throttling))
            yield temperature
            yield throttling
        if s.rails:
            watts = GaugeMetricFamily("appliance_device_rail_power_watts", "INA3221 power rail", labels=["rail"])
            volts = GaugeMetricFamily("appliance_device_rail_voltage_volts", "INA3221 power rail", labels=["rail"])
            amperes = GaugeMetricFamily("appliance_device_rail_current_amperes", "INA3221 rail", labels=["rail"])
            for rail in s.rails:
                watts.add_metric([rail.name], rail.watts)
                volts.add_metric([rail.name], rail.volts)
                amperes.add_metric([rail.name], rail.amperes)
            yield from (watts, volts, amperes)
        if s.board_power_watts is not None:
            board = GaugeMetricFamily(
                "appliance_device_board_power_watts",
                "the module's input power: VDD_IN where measured, else the sum of the measured rails",
                labels=["source"],
            )
            board.add_metric([s.board_power_source], s.board_power_watts)
            yield board
        if s.memory is not None:
            memory = GaugeMetricFamily("appliance_device_memory_bytes", "memory shared by CPU and GPU", labels=["kind"])
            memory.add_metric(["total"], s.memory.total_bytes)
            memory.add_metric(["available"], s.memory.available_bytes)
            if s.memory.gpu_bytes is not None:
                memory.add_metric(["gpu"], s.memory.gpu_bytes)
            yield memory
        if s.power_mode is not None:
            mode = GaugeMetricFamily(
                "appliance_device_power_mode",
                "the nvpmodel mode (value 1; id and name as labels)",
                labels=["id", "name"],
            )
            mode.add_metric([str(s.power_mode.id), s.power_mode.name], 1)
            yield mode
