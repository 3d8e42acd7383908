"""The TensorRT backend's parts that need no TensorRT: selection, config completion from the manifest, and the
clear error on a machine without TensorRT. (Running an engine needs a GPU: not tested here.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from appliance.backends import factory_for
from appliance.backends.tensorrt import TensorRTFactory
from appliance.core.backend import LoadError
from appliance.core.repository import LoadOptions

from .test_boot import build_repo  # a repository built through FakeTensorRTBuilderForTests (no real engine)


def _config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def test_tensorrt_configs_select_the_in_process_backend() -> None:
    assert factory_for(_config('backend: "tensorrt"')).name == "tensorrt"
    assert factory_for(_config('platform: "tensorrt_plan"')).name == "tensorrt"
    routed = 'platform: "tensorrt_plan" parameters { key: "appliance_backend" value { string_value: "tensorrt" } }'
    assert factory_for(_config(routed), triton_url="127.0.0.1:8001").name == "tensorrt"
    assert factory_for(_config('backend: "onnxruntime"')).name == "onnxruntime"


def test_config_completed_from_the_manifest(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)
    config = mc.ModelConfig(backend="tensorrt")  # nothing but the backend
    TensorRTFactory().complete_config(config, repo / "mlp", 1)
    assert config.max_batch_size == 8
    assert [(t.name, list(t.dims), mc.DataType.Name(t.data_type)) for t in config.input] == [
        ("input", [16], "TYPE_FP32")
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("logits", [10])]


def test_load_without_tensorrt_says_what_is_missing(tmp_path: Path, mlp_onnx: Path) -> None:
    repo = build_repo(tmp_path, mlp_onnx)
    factory = TensorRTFactory()
    config = mc.ModelConfig(backend="tensorrt")
    factory.complete_config(config, repo / "mlp", 1)
    with pytest.raises(
        LoadError,
        match=r"model.plan: the tensorrt backend needs the Python packages 'tensorrt' \(10\) "
        r"and 'pycuda', and '(tensorrt|pycuda)' is not installed",
    ):
        factory.load(config, repo / "mlp", 1, LoadOptions())
    with pytest.raises(LoadError, match=r"engine file .*2/model.plan not found"):
        factory.load(config, repo / "mlp", 2, LoadOptions())
    (repo / "mlp" / "1" / "model.plan.json").unlink()
    with pytest.raises(LoadError, match=r"list the inputs and outputs, or keep the manifest model.plan.json"):
        factory.complete_config(mc.ModelConfig(backend="tensorrt"), repo / "mlp", 1)
