"""The benchmark's ``image`` model: an image-size input with light compute, so the data path dominates.

``image [B,3,224,224] FP32 -> probabilities [B,10] FP32``: one 4x4 convolution with stride 4 (3 -> 16
channels, 56x56), ReLU, global average pooling and a 16 -> 10 dense layer with softmax; seeded weights.
A request carries 602,112 bytes of input and gets 40 bytes back; ONNX Runtime runs it in well under a
millisecond here, so decoding, copying and moving the input is most of what a server does per request.

It lives with the benchmarks, not in ``appliance.demo``: the demo repository is what ``appliance serve``
loads by default (and what its tests list), and a 600 KB-a-request model is only of use for measuring.

    python -m benchmarks.image_model DIR      # writes DIR/image/{config.pbtxt,1/model.onnx}
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from appliance.demo import IR_VERSION, OPSET

NAME = "image"

CONFIG = """\
name: "image"
backend: "onnxruntime"
max_batch_size: 16
input [ { name: "image" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
output [ { name: "probabilities" data_type: TYPE_FP32 dims: [ 10 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { max_queue_delay_microseconds: 0 }
"""


def image_model(seed: int = 2) -> Any:
    """The ONNX model (``onnx.ModelProto``) with seeded He-scaled weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv_w = (rng.standard_normal((16, 3, 4, 4)) / np.sqrt(3 * 4 * 4)).astype(np.float32)
    fc_w = (rng.standard_normal((16, 10)) / np.sqrt(16)).astype(np.float32)
    inits = [
        numpy_helper.from_array(conv_w, "conv_w"),
        numpy_helper.from_array(np.zeros(16, np.float32), "conv_b"),
        numpy_helper.from_array(fc_w, "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["image", "conv_w", "conv_b"], ["c"], name="conv", kernel_shape=[4, 4], strides=[4, 4]
        ),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["gap"], name="pool"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        NAME,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_image_model(root: Path) -> Path:
    """Write ``root/image/{config.pbtxt,1/model.onnx}``; return the model folder."""
    import onnx

    folder = root / NAME
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(image_model(), str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(CONFIG)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="repository folder (created if missing)")
    print(write_image_model(parser.parse_args().root))


if __name__ == "__main__":
    main()
