"""Triton's QA ``add_sub`` models for the ONNX Runtime backend, written with the onnx helper API.

An equivalent of the ONNX part of ``qa/common/gen_qa_models.py`` (triton-inference-server/server), fixed-shape
set: each model takes ``INPUT0`` and ``INPUT1`` of one datatype, shape ``[16]``, and returns ``OUTPUT0 = IN0 + IN1``
and ``OUTPUT1 = IN0 - IN1``, each cast to its own output datatype. As there:

- names are ``onnx_<in>_<out0>_<out1>`` (batching, ``max_batch_size: 8``) and ``onnx_nobatch_<in>_<out0>_<out1>``
  (``max_batch_size: 0``), with numpy's names for the datatypes (``object`` for BYTES);
- INT8, INT16 and BYTES inputs are cast to INT32 before the Add and Sub (BYTES: each string parsed as a decimal
  number), and an output of BYTES is the INT32 result written back as a decimal string;
- a FP16 result is not cast from FP16 to FP16 (an Identity instead: an old ONNX Runtime bug);
- the same-type FP16, FP32, INT8, INT16 and INT32 models also have versions 2 and 3, which swap the outputs
  (``OUTPUT0 = IN0 - IN1``, ``OUTPUT1 = IN0 + IN1``), and the version policies of Triton's QA: INT8
  ``latest { num_versions: 1 }``, INT16 ``latest { num_versions: 2 }``, INT32 ``all { }``, FP16
  ``specific { versions: [1] }``, FP32 ``specific { versions: [1, 3] }``, every other model the default
  (``latest { num_versions: 1 }``, written out as Triton's generator does);
- ``OUTPUT0`` has a ``label_filename`` of 16 labels; the config names ``platform: "onnxruntime_onnx"``.

The variable-shape set (``--variable`` there) has the same names, so it goes in a repository of its own: 11
datatype combinations with dims such as ``[-1]``, ``[8, -1]`` and ``[-1, 8, -1]``, version 1 only.

Beyond Triton's list, so that every datatype the ONNX Runtime backend serves is here: same-type models of BOOL,
UINT8, UINT16, UINT32, UINT64 and FP64 (BOOL, UINT8 and UINT16 computed in INT32 like INT8; a BOOL output is
"not zero").

The models are deterministic (no weights); the data a test sends is seeded (:func:`inputs`), and
:meth:`QaModel.expected` is what numpy makes of it, with the same casts, so integers wrap as they do in the model.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper

from tests.support.models import DATATYPES, _finish, _write

SIZE = 16
MAX_BATCH = 8
LABELS = [f"label{i}" for i in range(SIZE)]

# Inputs the model casts to INT32 before Add and Sub (ONNX Runtime has no Add of these, or no Add at all).
_VIA_INT32 = {"INT8", "INT16", "BYTES", "BOOL", "UINT8", "UINT16"}
_SWAPPED_VERSIONS = (2, 3)


def triton_name(datatype: str) -> str:
    """The name Triton's QA gives a datatype in model names: numpy's (``object`` for BYTES)."""
    return DATATYPES[datatype][1].name


def compute_type(input_type: str) -> str:
    return "INT32" if input_type in _VIA_INT32 else input_type


@dataclass(frozen=True)
class QaModel:
    """One add_sub model: its datatypes, batching, version policy and which versions are on disk and served."""

    input: str
    output0: str
    output1: str
    batched: bool
    policy: str  # the text after ``version_policy:``
    versions: tuple[int, ...]  # on disk
    served: tuple[int, ...]  # what the policy serves of them
    dims: tuple[int, ...] = (SIZE,)  # of every input and output, -1 for a variable dimension

    @property
    def name(self) -> str:
        prefix = "onnx" if self.batched else "onnx_nobatch"
        return "_".join([prefix, *(triton_name(t) for t in (self.input, self.output0, self.output1))])

    @property
    def not_served(self) -> tuple[int, ...]:
        return tuple(v for v in self.versions if v not in self.served)

    @property
    def outputs(self) -> dict[str, str]:
        return {"OUTPUT0": self.output0, "OUTPUT1": self.output1}

    @property
    def client_dims(self) -> list[int]:
        """The shape a client sees in the metadata: -1 for the batch and every variable dimension."""
        return ([-1] if self.batched else []) + list(self.dims)

    def shape(self, batch: int, free: int = SIZE) -> list[int]:
        """A request's shape: ``free`` for each variable dimension."""
        dims = [free if d == -1 else d for d in self.dims]
        return [batch, *dims] if self.batched else dims

    def config(self) -> str:
        in_type, out0, out1 = (DATATYPES[t][2] for t in (self.input, self.output0, self.output1))
        dims = ", ".join(str(d) for d in self.dims)
        return textwrap.dedent(f"""\
            name: "{self.name}"
            platform: "onnxruntime_onnx"
            max_batch_size: {MAX_BATCH if self.batched else 0}
            version_policy: {self.policy}
            input [
              {{ name: "INPUT0" data_type: {in_type} dims: [ {dims} ] }},
              {{ name: "INPUT1" data_type: {in_type} dims: [ {dims} ] }}
            ]
            output [
              {{ name: "OUTPUT0" data_type: {out0} dims: [ {dims} ] label_filename: "output0_labels.txt" }},
              {{ name: "OUTPUT1" data_type: {out1} dims: [ {dims} ] }}
            ]
            """)

    def onnx_model(self, version: int) -> bytes:
        swap = version in _SWAPPED_VERSIONS
        in_elem = DATATYPES[self.input][0]
        if self.input in _VIA_INT32:
            nodes = [helper.make_node("Cast", [f"INPUT{i}"], [f"_INPUT{i}"], to=TensorProto.INT32) for i in (0, 1)]
        else:
            nodes = [helper.make_node("Identity", [f"INPUT{i}"], [f"_INPUT{i}"]) for i in (0, 1)]
        nodes.append(helper.make_node("Add", ["_INPUT0", "_INPUT1"], ["CAST1" if swap else "CAST0"]))
        nodes.append(helper.make_node("Sub", ["_INPUT0", "_INPUT1"], ["CAST0" if swap else "CAST1"]))
        for index, out_type in enumerate((self.output0, self.output1)):
            if out_type == "FP16" and self.input == "FP16":
                nodes.append(helper.make_node("Identity", [f"CAST{index}"], [f"OUTPUT{index}"]))
            else:
                nodes.append(helper.make_node("Cast", [f"CAST{index}"], [f"OUTPUT{index}"], to=DATATYPES[out_type][0]))
        graph = helper.make_graph(
            nodes,
            self.name,
            [helper.make_tensor_value_info(f"INPUT{i}", in_elem, self._onnx_dims("in")) for i in (0, 1)],
            [
                helper.make_tensor_value_info(f"OUTPUT{i}", DATATYPES[t][0], self._onnx_dims(f"out{i}"))
                for i, t in enumerate((self.output0, self.output1))
            ],
        )
        return _finish(graph)

    def _onnx_dims(self, tensor: str) -> list[int | str | None]:
        """The ONNX shape: a symbolic name for the batch and each variable dimension (the inputs share theirs, each
        output has its own, as in gen_qa_models.py)."""
        dims: list[int | str | None] = ["batch"] if self.batched else []
        return dims + [f"{tensor}_var{i}" if d == -1 else d for i, d in enumerate(self.dims)]

    def write(self, repo: Path) -> None:
        _write(repo, self.name, self.config(), {v: self.onnx_model(v) for v in self.versions})
        (repo / self.name / "output0_labels.txt").write_text("\n".join(LABELS) + "\n")

    def expected(self, version: int, in0: np.ndarray, in1: np.ndarray) -> dict[str, np.ndarray]:
        """numpy's add and sub with the model's casts: what ``version`` returns for these inputs."""
        compute = DATATYPES[compute_type(self.input)][1]
        if self.input == "BYTES":
            a, b = (np.array([int(s) for s in x.reshape(-1)], compute).reshape(x.shape) for x in (in0, in1))
        else:
            a, b = in0.astype(compute), in1.astype(compute)
        with np.errstate(over="ignore"):
            add, sub = a + b, a - b
        results = (sub, add) if version in _SWAPPED_VERSIONS else (add, sub)
        out: dict[str, np.ndarray] = {}
        for (name, out_type), result in zip(self.outputs.items(), results, strict=True):
            if out_type == "BYTES":
                out[name] = np.array([str(v).encode() for v in result.reshape(-1)], object).reshape(result.shape)
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    out[name] = result.astype(DATATYPES[out_type][1])
        return out


def inputs(model: QaModel, batch: int, seed: int, free: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Seeded INPUT0 and INPUT1 for ``model``: each integer type over its whole range, its minimum and maximum
    first (so sums and differences wrap), except where an integer result is then cast to FP16 or FP32 (small
    values there, as Triton's QA sends); FP32 and FP64 around ±100, within every integer output's range; FP16
    quarters below 256, whose sums are exact (ONNX Runtime on CPU adds FP16 in FP32 when the result is cast to
    FP32); BYTES the decimal strings of INT32 values, extremes included. ``free``: the size of each variable
    dimension."""
    shape = tuple(model.shape(batch, free))
    rng = np.random.default_rng(seed)
    pair: list[np.ndarray] = []
    for index in (0, 1):
        datatype = model.input
        if datatype == "BYTES":
            values = _integers(rng, np.dtype(np.int32), shape, index)
            pair.append(np.array([str(v).encode() for v in values.reshape(-1)], object).reshape(shape))
        elif datatype == "BOOL":
            pair.append(rng.integers(0, 2, shape).astype(np.bool_))
        elif DATATYPES[datatype][1].kind in "iu":
            dtype = DATATYPES[datatype][1]
            floats_out = any(DATATYPES[t][1].kind == "f" for t in (model.output0, model.output1))
            if floats_out:
                pair.append(rng.integers(-1000 if dtype.kind == "i" else 0, 1000, shape).astype(dtype))
            else:
                pair.append(_integers(rng, dtype, shape, index))
        elif datatype == "FP16":
            # Quarters below 256: sums and differences exact in FP16, whatever precision the runtime adds in.
            pair.append((rng.integers(-1023, 1024, shape) / 4).astype(np.float16))
        else:
            pair.append((rng.standard_normal(shape) * 100).astype(DATATYPES[datatype][1]))
    return pair[0], pair[1]


def _integers(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...], index: int) -> np.ndarray:
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    flat = values.reshape(-1)
    # INPUT0 starts max, min; INPUT1 starts max, max: max+max and min-max wrap.
    flat[: min(2, flat.size)] = ([info.max, info.min] if index == 0 else [info.max, info.max])[: flat.size]
    return values


# -- the set -------------------------------------------------------------------------------------

_DEFAULT_POLICY = "{ latest { num_versions: 1 }}"

# (input, output0, output1, version policy or None for the default), in gen_qa_models.py's order.
TRITON_FIXED: list[tuple[str, str, str, str | None]] = [
    ("INT8", "INT8", "INT8", "{ latest { num_versions: 1 }}"),
    ("INT16", "INT16", "INT16", "{ latest { num_versions: 2 }}"),
    ("INT32", "INT32", "INT32", "{ all { }}"),
    ("INT64", "INT64", "INT64", None),
    ("FP16", "FP16", "FP16", "{ specific { versions: [1] }}"),
    ("FP32", "FP32", "FP32", "{ specific { versions: [1, 3] }}"),
    ("FP16", "FP32", "FP32", None),
    ("INT32", "INT8", "INT8", None),
    ("INT8", "INT32", "INT32", None),
    ("INT32", "INT8", "INT16", None),
    ("INT32", "FP32", "FP32", None),
    ("FP32", "INT32", "INT32", None),
    ("INT32", "FP16", "INT16", None),
    ("BYTES", "INT32", "INT32", None),
    ("BYTES", "BYTES", "BYTES", None),
    ("BYTES", "INT32", "BYTES", None),
    ("BYTES", "BYTES", "INT32", None),
    ("INT32", "BYTES", "BYTES", None),
    ("INT32", "INT32", "BYTES", None),
    ("INT32", "BYTES", "INT32", None),
]
# Same-type models with versions 2 and 3 (swapped outputs), as gen_qa_models.py writes them for ONNX.
TRITON_VERSIONED = {"FP16", "FP32", "INT8", "INT16", "INT32"}
# Datatypes of the ONNX Runtime backend that Triton's list leaves out.
EXTRA_TYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "FP64"]

# gen_qa_models.py --variable: (input, output0, output1, dims), version 1, the default policy. Same names as the
# fixed-shape set, so a repository of their own (as Triton's QA keeps them).
TRITON_VARIABLE: list[tuple[str, str, str, tuple[int, ...]]] = [
    ("FP32", "FP32", "FP32", (-1,)),
    ("FP32", "INT32", "INT32", (-1, -1)),
    ("FP32", "INT64", "INT64", (8, -1)),
    ("FP32", "INT32", "INT64", (-1, 8, -1)),
    ("FP32", "FP32", "INT32", (-1,)),
    ("INT32", "INT32", "INT32", (-1, -1)),
    ("INT32", "INT32", "FP32", (-1, 8, -1)),
    ("BYTES", "BYTES", "BYTES", (-1,)),
    ("BYTES", "INT32", "INT32", (-1, -1)),
    ("BYTES", "BYTES", "INT32", (8, -1)),
    ("BYTES", "INT32", "BYTES", (-1, 8, -1)),
]


def _served(policy: str, versions: tuple[int, ...]) -> tuple[int, ...]:
    if "all" in policy:
        return versions
    if "specific" in policy:
        listed = {int(v) for v in policy.split("[")[1].split("]")[0].split(",")}
        return tuple(v for v in versions if v in listed)
    count = int(policy.split("num_versions:")[1].split("}")[0])
    return versions[-count:]


def qa_models(variable: bool = False) -> list[QaModel]:
    """Every model of the fixed-shape set (52 models, 72 versions) or, with ``variable``, of the variable-shape set
    (22 models), batching and not."""
    if variable:
        return [
            QaModel(i, o0, o1, batched, _DEFAULT_POLICY, (1,), (1,), dims)
            for i, o0, o1, dims in TRITON_VARIABLE
            for batched in (True, False)
        ]
    rows = TRITON_FIXED + [(t, t, t, None) for t in EXTRA_TYPES]
    found: list[QaModel] = []
    for in_type, out0, out1, policy in rows:
        same = in_type == out0 == out1
        versions = (1, *_SWAPPED_VERSIONS) if same and in_type in TRITON_VERSIONED else (1,)
        text = policy or _DEFAULT_POLICY
        for batched in (True, False):
            found.append(QaModel(in_type, out0, out1, batched, text, versions, _served(text, versions)))
    return found


def write_qa_repository(repo: Path, variable: bool = False) -> list[QaModel]:
    """Write every model of the set (config, versions, labels) into ``repo``; return them."""
    found = qa_models(variable)
    for model in found:
        model.write(repo)
    return found
