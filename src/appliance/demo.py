"""The demo model repository: small ONNX models made on the spot with seeded weights.

- ``mlp``: an overhead-bound tiny MLP, ``input [B,64] FP32 -> logits [B,10] FP32``.
- ``cnn``: a compute-bound image classifier, ``image [B,3,64,64] FP32 -> probabilities [B,10] FP32``, with a
  labels file so ``classification`` works.

Both use Triton's layout and ``config.pbtxt``, so the same folder loads in Triton's ONNX Runtime backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

OPSET = 17
IR_VERSION = 8  # readable by every ONNX Runtime since 1.10

CNN_LABELS = ["cat", "dog", "bird", "fish", "horse", "frog", "ship", "truck", "plane", "car"]


def _weights(rng: np.random.Generator, *shape: int) -> NDArray[Any]:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    weights: NDArray[Any] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return weights


def mlp_model(seed: int = 0) -> onnx.ModelProto:  # type: ignore[name-defined]  # noqa: F821
    """``[B,64] -> [B,10]``: two Gemm layers with a ReLU, seeded weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_weights(rng, 64, 128), "w1"),
        numpy_helper.from_array(np.zeros(128, np.float32), "b1"),
        numpy_helper.from_array(_weights(rng, 128, 10), "w2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    return _finish(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))


def cnn_model(seed: int = 1) -> onnx.ModelProto:  # type: ignore[name-defined]  # noqa: F821
    """``[B,3,64,64] -> [B,10]``: two 3x3 convolutions, pooling and a classifier head, seeded weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_weights(rng, 16, 3, 3, 3), "conv1_w"),
        numpy_helper.from_array(np.zeros(16, np.float32), "conv1_b"),
        numpy_helper.from_array(_weights(rng, 48, 16, 3, 3), "conv2_w"),
        numpy_helper.from_array(np.zeros(48, np.float32), "conv2_b"),
        numpy_helper.from_array(_weights(rng, 48, 10), "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["image", "conv1_w", "conv1_b"],
            ["c1"],
            name="conv1",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        ),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node(
            "Conv", ["r1", "conv2_w", "conv2_b"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="pool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    return _finish(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]))


def _finish(model: onnx.ModelProto) -> onnx.ModelProto:  # type: ignore[name-defined]  # noqa: F821
    import onnx

    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


MLP_CONFIG = """\
name: "mlp"
backend: "onnxruntime"
max_batch_size: 32
input [ { name: "input" data_type: TYPE_FP32 dims: [ 64 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 0 }
"""

CNN_CONFIG = """\
name: "cnn"
backend: "onnxruntime"
max_batch_size: 32
input [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 64, 64 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 0 }
"""


def write_demo_repository(root: Path) -> list[Path]:
    """Write the demo models into ``root`` (created if missing); return the model folders written."""
    import onnx

    written = []
    for name, model, config, labels in (
        ("mlp", mlp_model(), MLP_CONFIG, None),
        ("cnn", cnn_model(), CNN_CONFIG, CNN_LABELS),
    ):
        folder = root / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(folder / "1" / "model.onnx"))
        (folder / "config.pbtxt").write_text(config)
        if labels:
            (folder / "labels.txt").write_text("\n".join(labels) + "\n")
        written.append(folder)
    return written
