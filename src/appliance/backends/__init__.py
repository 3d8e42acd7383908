"""Backends run a model version's batches. The core knows them only through :mod:`.base`.

Which backend serves a model follows its ``config.pbtxt``, as in Triton: ``backend`` first, then ``platform``.
"""

from __future__ import annotations

from .base import Backend, BackendFactory, LoadError


def factory_for(backend: str, platform: str) -> BackendFactory:
    """The backend factory a config asks for; LoadError names what is not available here."""
    key = backend or {"onnxruntime_onnx": "onnxruntime"}.get(platform, platform)
    if key in ("onnxruntime", ""):
        from .onnxruntime import OnnxRuntimeFactory

        return OnnxRuntimeFactory()
    raise LoadError(f"backend '{backend or platform}' is not available on this appliance (available: onnxruntime)")


__all__ = ["Backend", "BackendFactory", "LoadError", "factory_for"]
