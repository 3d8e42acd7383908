"""``GET /v2/device``: the device's telemetry (GPU, temperatures, power rails, memory, power mode) as JSON."""

from __future__ import annotations

from typing import Any

from ..core.errors import Unsupported
from ..device.metrics import DeviceMetrics


class DeviceEndpoint:
    def __init__(self, device: DeviceMetrics | None) -> None:
        self._device = device

    async def device(self) -> dict[str, Any]:
        if self._device is None:
            raise Unsupported("device telemetry is off (--device-telemetry true turns it on)")
        return self._device.sample().to_json()
