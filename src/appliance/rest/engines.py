"""``GET /v2/engines``: every TensorRT engine manifest in the repository, checked against its files and this
device, with what each model is served on now (:mod:`appliance.optimize.engines`). The panel's Models page."""

from __future__ import annotations

import asyncio
from typing import Any

from ..optimize.engines import EngineChecks, service_device
from ..settings import Settings


class EnginesEndpoint:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._checks: EngineChecks | None = None
        self._device_error = ""
        self._lock = asyncio.Lock()  # one check at a time: a second panel waits and reads the same results

    async def engines(self) -> dict[str, Any]:
        async with self._lock:
            if self._checks is None:
                device, self._device_error = await asyncio.to_thread(service_device, self._settings.device_root)
                self._checks = EngineChecks(self._settings.model_repository, device)
            checks = self._checks
            states = await asyncio.to_thread(checks.states)
        device = checks.device
        return {
            "device": {
                "tensorrt_version": device.tensorrt_version,
                "gpu_name": device.gpu_name,
                "compute_capability": device.compute_capability,
                "dla_cores": device.dla_cores,
                "l4t_release": device.l4t_release,
                "module": device.module,
                "error": self._device_error,
            },
            "engines": [s.to_json() for s in states],
        }
