"""The ONNX Runtime backend reads a model's inputs and outputs from the protobuf wire format, skipping the
weights (so a large model's load does not hold the GIL while parsing them): the same answer as ``onnx.load`` on
every model the tests write, and a LoadError naming the file for what is not an ONNX model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.backends.onnxruntime import _graph_io
from appliance.core.backend import LoadError
from tests.support import models, qa_models


def _expected(path: Path) -> tuple[list[bytes], list[bytes]]:
    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.SerializeToString() for i in model.graph.input if i.name not in initializers]
    return inputs, [o.SerializeToString() for o in model.graph.output]


def test_the_same_inputs_and_outputs_as_onnx_load(tmp_path: Path) -> None:
    qa_models.write_qa_repository(tmp_path / "qa")
    qa_models.write_qa_repository(tmp_path / "qa_variable", variable=True)
    models.write_slow(tmp_path / "more", "slow")
    models.write_triton_style(tmp_path / "more")
    # An older exporter's model: its initializer is listed as a graph input too
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "old",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.ones(2, np.float32), "w")],
    )
    old = tmp_path / "old.onnx"
    old.write_bytes(helper.make_model(graph).SerializeToString())
    paths = sorted(tmp_path.rglob("*.onnx"))
    assert len(paths) > 90
    for path in paths:
        inputs, outputs = _graph_io(path)
        assert ([i.SerializeToString() for i in inputs], [o.SerializeToString() for o in outputs]) == _expected(path)
    assert [i.name for i in _graph_io(old)[0]] == ["x"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "cannot mmap an empty file"),
        (b"this is not an ONNX model\x00\xff\x13", "protobuf wire type"),
        (b"\x0a\xff\xff\xff\xff\x0f", "runs past the end"),
        (b"\x08\xff", "a number runs past the end"),
        (b"\x08\x01", "it has no graph"),
    ],
)
def test_what_is_not_an_onnx_model_is_a_load_error_naming_the_file(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with pytest.raises(LoadError, match=f"{path}: not a readable ONNX model") as caught:
        _graph_io(path)
    assert words in str(caught.value)
