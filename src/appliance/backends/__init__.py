"""Backends serve model versions. The core knows them only through :mod:`appliance.core.backend`, and gets
:func:`factory_for` from whoever builds it (:mod:`appliance.server`): the core imports nothing from here.

Which backend serves a model follows its ``config.pbtxt``, as in Triton: ``backend`` first, then ``platform``;
``parameters { key: "appliance_backend" ... }`` can send a model to the local Triton server instead.
TensorRT plans (``backend: "tensorrt"`` or ``platform: "tensorrt_plan"``) run in process unless a Triton server
is configured; ``appliance_backend: "tensorrt"`` keeps them in process even then.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from ..core.backend import BackendFactory, LoadError

IN_PROCESS = {
    "onnxruntime": "onnxruntime",
    "onnxruntime_onnx": "onnxruntime",
    "tensorrt": "tensorrt",
    "tensorrt_plan": "tensorrt",
}


def factory_for(config: mc.ModelConfig, triton_url: str = "") -> BackendFactory:
    """The backend factory a config asks for; LoadError names what is not available here."""
    from .triton import BACKEND_PARAMETER, TritonFactory

    routed = config.parameters[BACKEND_PARAMETER].string_value if BACKEND_PARAMETER in config.parameters else ""
    if routed == "triton":
        return TritonFactory(triton_url)
    if routed and routed not in IN_PROCESS:
        raise LoadError(
            f"parameter {BACKEND_PARAMETER} '{routed}' is not a backend of this appliance (triton, tensorrt)"
        )
    key = IN_PROCESS.get(routed) or IN_PROCESS.get(config.backend) or IN_PROCESS.get(config.platform)
    if key == "tensorrt" and (routed or not triton_url):
        from .tensorrt import TensorRTFactory  # imports tensorrt only when a model loads

        return TensorRTFactory()
    if key == "onnxruntime" or (not config.backend and not config.platform):
        from .onnxruntime import OnnxRuntimeFactory

        return OnnxRuntimeFactory()
    if triton_url:
        return TritonFactory(triton_url)
    raise LoadError(
        f"backend '{config.backend or config.platform}' is not available on this appliance "
        "(in process: onnxruntime, tensorrt; other backends need triton_url)"
    )


__all__ = ["factory_for"]
