"""Write a ResNet-50 v1.5 model repository for the appliance (issue 5's serving target).

    python benchmarks/resnet50.py DIR                       # DIR/resnet50/{config.pbtxt, 1/model.onnx}
    python benchmarks/resnet50.py DIR --backend tensorrt    # config for `trt-optimize build` to complete

The network is built with the ONNX helper API (no torch, nothing downloaded): the torchvision ResNet-50 v1.5
layout (stride 2 on the 3x3 convolution of each downsampling bottleneck), with batch norm folded into the
convolutions, seeded random weights (He init) and zero biases, so the accuracy is meaningless but the compute
(about 4.1 GFLOPs a sample, 25.5 M parameters) and the shapes are the real ones. Input ``image`` FP32
[B, 3, 224, 224]; output ``probabilities`` FP32 [B, 1000] (Softmax).

With ``--backend tensorrt`` the config says ``backend: "tensorrt"`` on the GPU; it serves once an engine is in
the version folder:

    trt-optimize build DIR/resnet50/1/model.onnx --repository DIR --model resnet50 --precision fp16 \\
        --validate --profile 1,8,16

(the profiles come from the config: ``preferred_batch_size: [8, 16]`` with ``max_batch_size: 16`` gives 1..8
and 9..16; see docs/optimize.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

NAME = "resnet50"
INPUT = "image"
OUTPUT = "probabilities"
CLASSES = 1000
OPSET = 17
IR_VERSION = 8  # readable by the ONNX Runtime and TensorRT parsers of JetPack 6
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (bottleneck width, blocks, first stride)
EXPANSION = 4

CONFIG = """\
name: "{name}"
backend: "{backend}"
max_batch_size: 16
input [ {{ name: "{input}" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] }} ]
output [ {{ name: "{output}" data_type: TYPE_FP32 dims: [ {classes} ] }} ]
instance_group [ {{ count: 1 kind: {kind} }} ]
dynamic_batching {{ max_queue_delay_microseconds: 2000 preferred_batch_size: [ 8, 16 ] }}
"""

BACKENDS = {"onnxruntime": "KIND_CPU", "tensorrt": "KIND_GPU"}


class _Graph:
    """Collects nodes and initializers while the network is laid out."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []

    def _add(self, name: str, array: np.ndarray[Any, Any]) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(
        self, x: str, name: str, c_in: int, c_out: int, k: int, stride: int = 1, relu: bool = True, gain: float = 1.0
    ) -> str:
        """Conv (batch norm folded in: weights and a bias) and optionally Relu; He-normal weights."""
        from onnx import helper

        std = gain * np.sqrt(2.0 / (c_in * k * k))
        w = self._add(f"{name}.weight", self.rng.normal(0.0, std, (c_out, c_in, k, k)))
        b = self._add(f"{name}.bias", np.zeros(c_out))
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [name], name=name, kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4
            )
        )
        if not relu:
            return name
        self.nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    def bottleneck(self, x: str, name: str, c_in: int, width: int, stride: int) -> str:
        """1x1 -> 3x3 (stride here: v1.5) -> 1x1 (x4), plus the shortcut (projected when the shape changes)."""
        from onnx import helper

        c_out = width * EXPANSION
        y = self.conv(x, f"{name}.conv1", c_in, width, 1)
        y = self.conv(y, f"{name}.conv2", width, width, 3, stride)
        # a small gain on the last conv of each block (like zero-init of its BN scale, but not zero) keeps
        # the activations of 16 residual additions in range, so the softmax is not one-hot
        y = self.conv(y, f"{name}.conv3", width, c_out, 1, relu=False, gain=0.2)
        shortcut = x
        if stride != 1 or c_in != c_out:
            shortcut = self.conv(x, f"{name}.downsample", c_in, c_out, 1, stride, relu=False)
        self.nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.add"], name=f"{name}.add"))
        self.nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"], name=f"{name}.out"))
        return f"{name}.out"


def resnet50_model(seed: int = 0) -> Any:
    """The ResNet-50 v1.5 ``onnx.ModelProto`` with seeded He-initialized weights; passes onnx.checker."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph(seed)
    x = g.conv(INPUT, "conv1", 3, 64, 7, 2)
    g.nodes.append(
        helper.make_node(
            "MaxPool", [x], ["maxpool"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]
        )
    )
    x, c_in = "maxpool", 64
    for stage, (width, blocks, stride) in enumerate(STAGES, start=1):
        for block in range(blocks):
            x = g.bottleneck(x, f"layer{stage}.{block}", c_in, width, stride if block == 0 else 1)
            c_in = width * EXPANSION
    fc_w = g._add("fc.weight", g.rng.normal(0.0, np.sqrt(1.0 / c_in), (c_in, CLASSES)))
    fc_b = g._add("fc.bias", np.zeros(CLASSES))
    g.nodes += [
        helper.make_node("GlobalAveragePool", [x], ["avgpool"], name="avgpool"),
        helper.make_node("Flatten", ["avgpool"], ["flatten"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flatten", fc_w, fc_b], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], [OUTPUT], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        g.nodes,
        NAME,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", CLASSES])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="appliance")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def config_text(backend: str = "onnxruntime", name: str = NAME) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return CONFIG.format(
        name=name, backend=backend, input=INPUT, output=OUTPUT, classes=CLASSES, kind=BACKENDS[backend]
    )


def write_repository(root: Path, backend: str = "onnxruntime", seed: int = 0, name: str = NAME) -> Path:
    """Write ``root/<name>/config.pbtxt`` and ``root/<name>/1/model.onnx``; return the model folder."""
    import onnx

    text = config_text(backend, name)  # checks the backend before the slow part
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(resnet50_model(seed), str(folder / "1" / "model.onnx"))
    (folder / "config.pbtxt").write_text(text)
    return folder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/resnet50.py",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("repository", type=Path, metavar="DIR", help="model repository to write into")
    parser.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="onnxruntime",
        help="onnxruntime (CPU, serves as is) or tensorrt (GPU; run `trt-optimize build` next)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--name", default=NAME, help="model name (folder in the repository)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = write_repository(args.repository, args.backend, args.seed, args.name)
    print(f"wrote {folder / 'config.pbtxt'} ({args.backend}) and {folder / '1' / 'model.onnx'}")
    if args.backend == "tensorrt":
        print(
            "next, on the Jetson:\n"
            f"  trt-optimize build {folder / '1' / 'model.onnx'} --repository {args.repository} "
            f"--model {args.name} --precision fp16 --validate --profile 1,8,16"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
