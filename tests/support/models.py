"""Builders of small test ONNX models (onnx helper API, seeded weights), each written with a Triton-style
``config.pbtxt`` into a model repository.

Every builder returns the ONNX bytes it wrote, so a test can run the very same file in-process with ONNX
Runtime and compare.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8

# KServe datatype -> (ONNX element type, numpy dtype, Triton config type)
DATATYPES: dict[str, tuple[int, np.dtype, str]] = {
    "BOOL": (TensorProto.BOOL, np.dtype(np.bool_), "TYPE_BOOL"),
    "INT8": (TensorProto.INT8, np.dtype(np.int8), "TYPE_INT8"),
    "INT16": (TensorProto.INT16, np.dtype(np.int16), "TYPE_INT16"),
    "INT32": (TensorProto.INT32, np.dtype(np.int32), "TYPE_INT32"),
    "INT64": (TensorProto.INT64, np.dtype(np.int64), "TYPE_INT64"),
    "UINT8": (TensorProto.UINT8, np.dtype(np.uint8), "TYPE_UINT8"),
    "UINT16": (TensorProto.UINT16, np.dtype(np.uint16), "TYPE_UINT16"),
    "UINT32": (TensorProto.UINT32, np.dtype(np.uint32), "TYPE_UINT32"),
    "UINT64": (TensorProto.UINT64, np.dtype(np.uint64), "TYPE_UINT64"),
    "FP16": (TensorProto.FLOAT16, np.dtype(np.float16), "TYPE_FP16"),
    "FP32": (TensorProto.FLOAT, np.dtype(np.float32), "TYPE_FP32"),
    "FP64": (TensorProto.DOUBLE, np.dtype(np.float64), "TYPE_FP64"),
    "BYTES": (TensorProto.STRING, np.dtype(object), "TYPE_STRING"),
}


def _finish(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _write(repo: Path, name: str, config: str | None, versions: dict[int, bytes], filename: str = "model.onnx") -> None:
    folder = repo / name
    for version, data in versions.items():
        (folder / str(version)).mkdir(parents=True, exist_ok=True)
        (folder / str(version) / filename).write_bytes(data)
    if config is not None:
        (folder / "config.pbtxt").write_text(textwrap.dedent(config))


def sample(datatype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Seeded sample data of a KServe datatype, covering each type's interesting values."""
    rng = np.random.default_rng(seed)
    dtype = DATATYPES[datatype][1]
    count = int(np.prod(shape))
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if datatype == "BYTES":
        words = ["", "a", "héllo wörld", "x" * 300, "tab\tnewline\n", "0", "\u2603"]
        return np.array([words[i % len(words)].encode() for i in range(count)], dtype=object).reshape(shape)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        flat = values.reshape(-1)
        flat[: min(2, count)] = [info.min, info.max][: min(2, count)]
        return values
    values = (rng.standard_normal(shape) * 100).astype(dtype)
    return values


# -- identity over every datatype ----------------------------------------------------------------


def identity_model(datatype: str) -> bytes:
    elem = DATATYPES[datatype][0]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        f"identity_{datatype.lower()}",
        [helper.make_tensor_value_info("INPUT0", elem, ["batch", "n"])],
        [helper.make_tensor_value_info("OUTPUT0", elem, ["batch", "n"])],
    )
    return _finish(graph)


def write_identity(repo: Path, datatype: str, batched: bool) -> str:
    """``identity_<type>`` (max_batch_size 8, dynamic batching, dims [-1]) or ``identity_<type>_nobatch``
    (max_batch_size 0, dims [-1, -1])."""
    config_type = DATATYPES[datatype][2]
    name = f"identity_{datatype.lower()}" + ("" if batched else "_nobatch")
    dims = "[ -1 ]" if batched else "[ -1, -1 ]"
    extra = "dynamic_batching { }" if batched else ""
    config = f"""\
        name: "{name}"
        backend: "onnxruntime"
        max_batch_size: {8 if batched else 0}
        input [ {{ name: "INPUT0" data_type: {config_type} dims: {dims} }} ]
        output [ {{ name: "OUTPUT0" data_type: {config_type} dims: {dims} }} ]
        {extra}
        """
    _write(repo, name, config, {1: identity_model(datatype)})
    return name


# -- reshape, Triton-style -----------------------------------------------------------------------


def scale_model(batched: bool, factor: float = 2.0) -> bytes:
    """``y = x * factor`` over ``[B?, 2, 2]`` FP32."""
    shape: list[int | str] = (["batch"] if batched else []) + [2, 2]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "factor"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array(factor, np.float32), "factor")],
    )
    return _finish(graph)


def write_reshape(repo: Path, name: str = "reshape") -> bytes:
    """Batched model whose client-side shape ``[B, 4]`` is reshaped to the model's ``[B, 2, 2]``."""
    data = scale_model(batched=True)
    _write(
        repo,
        name,
        f"""\
        name: "{name}"
        backend: "onnxruntime"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] reshape {{ shape: [ 2, 2 ] }} }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] reshape {{ shape: [ 2, 2 ] }} }} ]
        dynamic_batching {{ }}
        """,
        {1: data},
    )
    return data


TRITON_LABELS = ["alpha", "beta", "gamma", "delta"]


def write_triton_style(repo: Path, name: str = "triton_onnx") -> bytes:
    """A model folder as written for Triton's onnxruntime backend: ``platform: "onnxruntime_onnx"``,
    ``max_batch_size: 0``, ``reshape`` on the output, a labels file, a non-default model filename,
    ``instance_group`` with KIND_CPU and ``optimization`` settings this appliance does not use."""
    data = scale_model(batched=False, factor=3.0)
    _write(
        repo,
        name,
        f"""\
        name: "{name}"
        platform: "onnxruntime_onnx"
        max_batch_size: 0
        default_model_filename: "scale.onnx"
        input [
          {{
            name: "x"
            data_type: TYPE_FP32
            dims: [ 2, 2 ]
          }}
        ]
        output [
          {{
            name: "y"
            data_type: TYPE_FP32
            dims: [ 4 ]
            reshape: {{ shape: [ 2, 2 ] }}
            label_filename: "labels.txt"
          }}
        ]
        instance_group [ {{ count: 2 kind: KIND_CPU }} ]
        optimization {{ graph: {{ level: 1 }} }}
        parameters {{ key: "intra_op_thread_count" value: {{ string_value: "1" }} }}
        version_policy: {{ latest: {{ num_versions: 1 }} }}
        """,
        {1: data},
        filename="scale.onnx",
    )
    (repo / name / "labels.txt").write_text("\n".join(TRITON_LABELS) + "\n")
    return data


# -- versions ------------------------------------------------------------------------------------


def add_model(value: float) -> bytes:
    """``y = x + value`` over ``[B, 2]`` FP32: the served version is visible in the output."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "value"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array(value, np.float32), "value")],
    )
    return _finish(graph)


def write_versioned(repo: Path, name: str, policy: str, versions: tuple[int, ...] = (1, 2, 3)) -> dict[int, bytes]:
    """Versions 1..3 (version v adds v); ``policy`` is the text of ``version_policy``."""
    files = {v: add_model(float(v)) for v in versions}
    _write(
        repo,
        name,
        f"""\
        name: "{name}"
        backend: "onnxruntime"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        version_policy: {policy}
        """,
        files,
    )
    return files


def write_configless(repo: Path, name: str = "autocomplete") -> bytes:
    """No config.pbtxt: dynamic first dimensions, so the config completes to a batching model."""
    data = add_model(10.0)
    _write(repo, name, None, {1: data})
    return data


def write_broken(repo: Path, name: str = "broken") -> None:
    """A config that is fine and a model file that is not ONNX."""
    _write(
        repo,
        name,
        f"""\
        name: "{name}"
        backend: "onnxruntime"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        """,
        {1: b"this is not an ONNX model\x00\xff\x13"},
    )


# -- the slow model ------------------------------------------------------------------------------

SLOW_N = 384


def slow_model(seed: int = 3) -> bytes:
    """``y = x`` over ``[B, 4]`` FP32, with a second input ``n [B, 1]`` INT64: the batch runs max(n) chained
    ``[384, 384]`` MatMuls first, so a test chooses how long an execution keeps its instance busy."""
    n = SLOW_N
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["m_in", "W"], ["m_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [n, n]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [n, n]),
        ],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Sigmoid", ["s"], ["sg"]),
        helper.make_node("Mul", ["W", "sg"], ["m0"]),
        helper.make_node("ReduceMax", ["n"], ["nmax"], keepdims=0),
        helper.make_node("Loop", ["nmax", "cond", "m0"], ["mfin"], body=body),
        helper.make_node("ReduceSum", ["mfin"], ["t"], keepdims=0),
        helper.make_node("Mul", ["t", "zero"], ["tz"]),
        helper.make_node("Add", ["x", "tz"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "slow",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [
            numpy_helper.from_array(q.astype(np.float32), "W"),
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
        ],
    )
    return _finish(graph)


def write_slow(
    repo: Path, name: str, max_batch_size: int = 8, dynamic_batching: str | None = "", instances: int = 1
) -> bytes:
    """The slow model with ``dynamic_batching { <dynamic_batching> }`` (None: no dynamic batching)."""
    data = slow_model()
    batching = "" if dynamic_batching is None else f"dynamic_batching {{ {dynamic_batching} }}"
    _write(
        repo,
        name,
        f"""\
        name: "{name}"
        backend: "onnxruntime"
        max_batch_size: {max_batch_size}
        input [
          {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }},
          {{ name: "n" data_type: TYPE_INT64 dims: [ 1 ] }}
        ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
        instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
        {batching}
        """,
        {1: data},
    )
    return data


@dataclass
class ModelsRepo:
    """A repository written by the tests, with the ONNX bytes of each model (``name`` or ``name/version``)."""

    root: Path
    files: dict[str, bytes]


# -- route arms ----------------------------------------------------------------------------------


def failing_add_model() -> bytes:
    """Declares ``y = x + v`` over ``[B, 2]`` but reshapes to ``[-1, 3]``: every request of batch 1 or 2 fails in
    ONNX Runtime (a canary made to fail)."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "failing_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([-1, 3], np.int64), "shape")],
    )
    return _finish(graph)


def slow_add_model(value: float, loops: int = 24, n: int = 160) -> bytes:
    """``y = x + value`` over ``[B, 2]``, after ``loops`` chained ``[n, n]`` MatMuls that depend on the input (so
    ONNX Runtime cannot fold them): the same answers as :func:`add_model`, some milliseconds later (a canary
    made slow)."""
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    body = helper.make_graph(
        [helper.make_node("MatMul", ["m_in", "W"], ["m_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_in", TensorProto.FLOAT, [n, n]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("m_out", TensorProto.FLOAT, [n, n]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Sigmoid", ["s"], ["sg"]),
            helper.make_node("Mul", ["W", "sg"], ["m0"]),
            helper.make_node("Loop", ["loops", "cond", "m0"], ["mfin"], body=body),
            helper.make_node("ReduceSum", ["mfin"], ["t"], keepdims=0),
            helper.make_node("Mul", ["t", "zero"], ["tz"]),
            helper.make_node("Add", ["x", "value"], ["xv"]),
            helper.make_node("Add", ["xv", "tz"], ["y"]),
        ],
        "slow_add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(q.astype(np.float32), "W"),
            numpy_helper.from_array(np.array(loops, np.int64), "loops"),
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
            numpy_helper.from_array(np.array(value, np.float32), "value"),
        ],
    )
    return _finish(graph)


def write_arms(repo: Path, name: str, versions: dict[int, bytes]) -> None:
    """A model with the ``[B, 2]`` FP32 ``x`` -> ``y`` interface of :func:`add_model`, every version served."""
    _write(
        repo,
        name,
        f"""\
        name: "{name}"
        backend: "onnxruntime"
        max_batch_size: 4
        input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
        version_policy: {{ all: {{ }} }}
        """,
        versions,
    )
