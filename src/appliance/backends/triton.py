"""Triton: models served by a local ``tritonserver`` that the appliance drives in EXPLICIT model-control mode.

Triton shares the appliance's model repository. Loading a model here loads it in Triton with the config from
``config.pbtxt`` (so Triton's dynamic batching and instance groups are the model's own); Triton then does the
batching, and requests go straight to it through ``tritonclient.grpc.aio`` with their priority and timeout.
Triton's errors map onto the appliance's error contract. When Triton is down or restarting, the model goes
UNAVAILABLE; the repository checks it periodically (:meth:`TritonBackend.is_ready`) and loads it again once Triton
is back (:meth:`TritonBackend.reload`).

A model is served through Triton when its config says ``parameters { key: "appliance_backend" value:
{ string_value: "triton" } }``, or when its backend is not one the appliance runs in process and a Triton URL
is configured (``triton_url``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from ..core import datatypes
from ..core.backend import BackendOptions, BackendUnreachable, LoadError, SelfSchedulingBackend
from ..core.errors import (
    DeadlineExceeded,
    InferenceError,
    InternalError,
    InvalidArgument,
    NotFound,
    QueueFull,
    Unavailable,
)

log = logging.getLogger(__name__)

BACKEND_PARAMETER = "appliance_backend"

_ERRORS: dict[str, type[InferenceError]] = {
    "StatusCode.INVALID_ARGUMENT": InvalidArgument,
    "StatusCode.NOT_FOUND": NotFound,
    "StatusCode.UNAVAILABLE": Unavailable,
    "StatusCode.RESOURCE_EXHAUSTED": QueueFull,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceeded,
}


def map_error(exc: Exception, model: str) -> InferenceError:
    """A tritonclient error as the appliance's own; unknown statuses are INTERNAL, a lost Triton UNAVAILABLE."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = exc.message()
        if "timeout" in message.lower() and status in ("", "StatusCode.UNAVAILABLE"):
            return DeadlineExceeded(f"model '{model}' (Triton): {message}")
        if "exceeds maximum queue size" in message:
            return QueueFull(f"model '{model}' (Triton): {message}")
        return _ERRORS.get(status, InternalError)(f"model '{model}' (Triton): {message}")
    return Unavailable(f"model '{model}': Triton is not reachable ({exc})")


def triton_config(config: mc.ModelConfig) -> str:
    """The config handed to Triton on load: the model's own, without the appliance's routing parameter."""
    handed = mc.ModelConfig()
    handed.CopyFrom(config)
    if BACKEND_PARAMETER in handed.parameters:
        del handed.parameters[BACKEND_PARAMETER]
    return str(json_format.MessageToJson(handed, preserving_proto_field_name=True))


class TritonFactory:
    name = "triton"

    def __init__(self, url: str) -> None:
        if not url:
            raise LoadError("this model is served through Triton, but no triton_url is configured")
        self.url = url

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        """Triton completes configs itself; the appliance only needs inputs and outputs declared."""
        if not config.input or not config.output:
            raise LoadError(
                f"{model_dir / 'config.pbtxt'}: a model served through Triton must declare its inputs and outputs"
            )

    def load(self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions) -> TritonBackend:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(self.url)
        try:
            client.load_model(config.name, config=triton_config(config))
            if not client.is_model_ready(config.name, str(version)):
                raise LoadError(f"Triton loaded '{config.name}' but version {version} is not ready")
        except InferenceServerException as exc:
            if str(exc.status() or "") == "StatusCode.UNAVAILABLE":
                raise BackendUnreachable(f"Triton at {self.url} is not reachable: {exc.message()}") from None
            raise LoadError(f"Triton at {self.url} could not load '{config.name}': {exc.message()}") from None
        finally:
            client.close()
        return TritonBackend(self.url, config, version)


class TritonBackend(SelfSchedulingBackend):
    """Requests go to Triton as they come: Triton queues, batches and runs them (and runs the model's own
    ``model_warmup`` when it loads it)."""

    def __init__(self, url: str, config: mc.ModelConfig, version: int) -> None:
        self.url = url
        self.name = config.name
        self.version = str(version)
        self._config_json = triton_config(config)
        self._client: Any = None

    def _aio(self) -> Any:
        if self._client is None:
            import tritonclient.grpc.aio as aioclient

            self._client = aioclient.InferenceServerClient(self.url)
        return self._client

    async def infer(
        self, inputs: dict[str, NDArray[Any]], outputs: Sequence[str], priority: int, timeout_us: int
    ) -> dict[str, NDArray[Any]]:
        import tritonclient.grpc.aio as aioclient

        tensors = []
        for name, array in inputs.items():
            tensor = aioclient.InferInput(name, list(array.shape), datatypes.of_array(array).name)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        requested = [aioclient.InferRequestedOutput(name) for name in outputs]
        try:
            result = await self._aio().infer(
                self.name,
                tensors,
                model_version=self.version,
                outputs=requested,
                priority=priority,
                timeout=timeout_us or None,
            )
        except Exception as exc:  # noqa: BLE001 - tritonclient and grpc errors alike
            raise map_error(exc, self.name) from None
        return {name: result.as_numpy(name) for name in outputs}

    async def is_ready(self) -> bool:
        try:
            return bool(await self._aio().is_model_ready(self.name, self.version))
        except Exception:  # noqa: BLE001 - Triton down is "not ready"
            return False

    async def reload(self) -> bool:
        """Load the model in Triton again (after Triton restarted); True when it is ready."""
        try:
            if not await self._aio().is_server_ready():
                return False
            await self._aio().load_model(self.name, config=self._config_json)
        except Exception as exc:  # noqa: BLE001
            log.warning("model '%s': reloading in Triton failed: %s", self.name, exc)
            return False
        return await self.is_ready()

    async def unload(self, replaced: bool = False) -> None:
        # Triton holds one model per name: after a reload (a new config, say its instance_group) the new load is
        # that same model, and unloading it here would take it away from the version that replaced this one.
        if not replaced:
            try:
                await self._aio().unload_model(self.name)
            except Exception as exc:  # noqa: BLE001 - Triton gone: nothing left to unload
                log.warning("model '%s': unloading in Triton failed: %s", self.name, exc)
        if self._client is not None:
            await self._client.close()
            self._client = None
