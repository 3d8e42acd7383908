"""ONNX Runtime on the CPU: the embedded default backend.

Reads the same ``config.pbtxt`` keys as Triton's onnxruntime backend: ``default_model_filename``
(``model.onnx``), ``instance_group`` counts, and the parameters ``intra_op_thread_count`` and
``inter_op_thread_count``. Spin-waiting is off unless ``ort_allow_spinning`` is set: at low load a
spinning session burns a whole core.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc

from ..core import datatypes
from ..core.backend import BackendOptions, BatchBackend, LoadError
from ..core.model_config import DEFAULT_MAX_BATCH_SIZE, string_parameter

DEFAULT_FILENAME = "model.onnx"


def model_path(config: mc.ModelConfig, model_dir: Path, version: int) -> Path:
    path = model_dir / str(version) / (config.default_model_filename or DEFAULT_FILENAME)
    if path.is_dir():  # Triton also accepts a folder holding model.onnx and external data
        path = path / DEFAULT_FILENAME
    if not path.is_file():
        raise LoadError(f"model file {path} not found")
    return path


def _graph_io(path: Path) -> tuple[list[Any], list[Any]]:
    """The graph's inputs (less those that are initializers, as older exporters list them) and outputs, as
    ``onnx.ValueInfoProto``. Read from the protobuf wire format over a memory map, skipping every weight, rather
    than with ``onnx.load``: parsing a model of 64 MiB of weights held the GIL for about 100 ms, which stalled
    every request of a server that was hot-swapping it."""
    import onnx

    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            with memoryview(mapped) as data:
                graph = next((span for field, span in _fields(data, 0, len(data)) if field == 7), None)
                if graph is None:
                    raise ValueError("it has no graph")
                inputs: list[Any] = []
                outputs: list[Any] = []
                initializers: set[str] = set()
                for field, (start, end) in _fields(data, *graph):
                    if field == 11:
                        inputs.append(onnx.ValueInfoProto.FromString(bytes(data[start:end])))
                    elif field == 12:
                        outputs.append(onnx.ValueInfoProto.FromString(bytes(data[start:end])))
                    elif field == 5:  # an initializer (TensorProto): its name, field 8
                        initializers.update(
                            bytes(data[a:b]).decode() for f, (a, b) in _fields(data, start, end) if f == 8
                        )
    except (OSError, ValueError, DecodeError) as exc:  # ValueError: ours, a bad name, mmap of an empty file
        raise LoadError(f"{path}: not a readable ONNX model ({exc})") from None
    return [i for i in inputs if i.name not in initializers], outputs


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, tuple[int, int]]]:
    """The length-delimited fields of the protobuf message in ``data[start:end]``: (field number, (start, end) of
    the payload); the others are skipped. ValueError when the bytes are not a protobuf message."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise ValueError(f"a field runs past the end of its message (byte {pos})")
            yield key >> 3, (pos, pos + size)
            pos += size
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {pos}")
    if pos != end:
        raise ValueError("the last field is cut short")


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError(f"a number runs past the end at byte {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _dims(value_info: Any) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def _config_type(value_info: Any, path: Path) -> int:
    elem = value_info.type.tensor_type.elem_type
    if elem not in datatypes.BY_ONNX:
        raise LoadError(f"{path}: tensor '{value_info.name}' has an ONNX element type ({elem}) not supported here")
    return int(mc.DataType.Value(datatypes.BY_ONNX[elem].config_name))


class OnnxRuntimeFactory:
    name = "onnxruntime"

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        path = model_path(config, model_dir, version)
        inputs, outputs = _graph_io(path)
        if not config.backend and not config.platform:
            config.backend = "onnxruntime"
        all_io = inputs + outputs
        batchable = bool(all_io) and all(_dims(t) and _dims(t)[0] == -1 for t in all_io)
        if not config.max_batch_size and not config.input and not config.output and batchable:
            # As Triton's auto-complete: dynamic first dimensions mean the model batches.
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
            if not config.HasField("dynamic_batching") and not config.HasField("sequence_batching"):
                config.dynamic_batching.SetInParent()
        skip = 1 if config.max_batch_size > 0 else 0
        for kind, present, graph_tensors in (
            ("input", config.input, inputs),
            ("output", config.output, outputs),
        ):
            names = {t.name for t in graph_tensors}
            for t in present:
                if t.name not in names:
                    raise LoadError(
                        f"config {kind} '{t.name}' is not an {kind} of {path} (it has: {', '.join(sorted(names))})"
                    )
            known = {t.name for t in present}
            for t in graph_tensors:
                if t.name in known:
                    continue
                entry = present.add()
                entry.name = t.name
                entry.data_type = _config_type(t, path)
                dims = _dims(t)[skip:]
                entry.dims.extend(dims if dims else [1])
            for t in present:
                if not t.data_type:
                    match = next(g for g in graph_tensors if g.name == t.name)
                    t.data_type = _config_type(match, path)

    def load(
        self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions
    ) -> OnnxRuntimeBackend:
        return OnnxRuntimeBackend(config, model_path(config, model_dir, version), options)


class OnnxRuntimeBackend(BatchBackend):
    def __init__(self, config: mc.ModelConfig, path: Path, options: BackendOptions) -> None:
        import onnxruntime as ort

        from ..core.model_config import instance_count

        intra = string_parameter(config, "intra_op_thread_count")
        inter = string_parameter(config, "inter_op_thread_count")
        so = ort.SessionOptions()
        try:
            so.intra_op_num_threads = int(intra) if intra else options.intra_op_thread_count
            so.inter_op_num_threads = int(inter) if inter else 1
        except ValueError:
            raise LoadError(
                f"parameters intra_op_thread_count/inter_op_thread_count must be integers, got {intra!r}/{inter!r}"
            ) from None
        spinning = "1" if options.ort_allow_spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        so.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        self._path, self._options = path, so
        self._sessions: list[Any] = []
        self.resize(instance_count(config))
        self._string_inputs = {i.name for i in self._sessions[0].get_inputs() if i.type == "tensor(string)"}
        self._string_outputs = {o.name for o in self._sessions[0].get_outputs() if o.type == "tensor(string)"}

    @property
    def instance_count(self) -> int:
        return len(self._sessions)

    def execute(
        self, instance: int, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        feed = inputs
        if self._string_inputs:
            feed = dict(inputs)
            for name in self._string_inputs & feed.keys():
                feed[name] = np.vectorize(_to_str, otypes=[object])(feed[name])
        results = self._sessions[instance].run(list(outputs), feed)
        out = dict(zip(outputs, results))
        for name in self._string_outputs & out.keys():
            out[name] = np.vectorize(_to_bytes, otypes=[object])(out[name])
        return out

    resizable = True

    def resize(self, count: int) -> None:
        import onnxruntime as ort

        if count < len(self._sessions):
            del self._sessions[count:]
        while len(self._sessions) < count:
            try:
                session = ort.InferenceSession(
                    str(self._path), sess_options=self._options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
                raise LoadError(f"{self._path}: ONNX Runtime cannot load it: {exc}") from None
            self._sessions.append(session)

    def close(self) -> None:
        self._sessions.clear()


def _to_str(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def _to_bytes(item: object) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()
