"""Core values -> REST JSON: server and model metadata, model configuration, statistics and the repository
index, in the shapes of KServe v2 and Triton's HTTP extensions."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..core.image import ImageResponse
from ..core.metadata import (
    BatchStatistics,
    Duration,
    ModelMetadata,
    ModelStatistics,
    RegionStatus,
    RepositoryModel,
    ServerMetadata,
    TensorMetadata,
)


def server_metadata_json(meta: ServerMetadata) -> dict[str, Any]:
    return {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}


def _tensor_json(tensor: TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}


def model_metadata_json(meta: ModelMetadata) -> dict[str, Any]:
    return {
        "name": meta.name,
        "versions": list(meta.versions),
        "platform": meta.platform,
        "inputs": [_tensor_json(t) for t in meta.inputs],
        "outputs": [_tensor_json(t) for t in meta.outputs],
    }


def _duration_json(duration: Duration) -> dict[str, int]:
    return {"count": duration.count, "ns": duration.ns}


def _batch_json(batch: BatchStatistics) -> dict[str, Any]:
    return {
        "batch_size": batch.batch_size,
        "compute_input": _duration_json(batch.compute_input),
        "compute_infer": _duration_json(batch.compute_infer),
        "compute_output": _duration_json(batch.compute_output),
    }


def _statistics_json(stats: ModelStatistics) -> dict[str, Any]:
    inference = stats.inference_stats
    return {
        "name": stats.name,
        "version": stats.version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration_json(inference.success),
            "fail": _duration_json(inference.fail),
            "queue": _duration_json(inference.queue),
            "compute_input": _duration_json(inference.compute_input),
            "compute_infer": _duration_json(inference.compute_infer),
            "compute_output": _duration_json(inference.compute_output),
            "cache_hit": _duration_json(inference.cache_hit),
            "cache_miss": _duration_json(inference.cache_miss),
        },
        "batch_stats": [_batch_json(b) for b in stats.batch_stats],
    }


def model_statistics_json(stats: list[ModelStatistics]) -> dict[str, Any]:
    """Triton's ``ModelStatisticsResponse``."""
    return {"model_stats": [_statistics_json(s) for s in stats]}


def repository_index_json(rows: list[RepositoryModel]) -> list[dict[str, Any]]:
    """Triton's repository index: a row has ``version`` only for a version, ``state`` and ``reason`` only for a
    model that was loaded (or tried to)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        entry: dict[str, Any] = {"name": row.name}
        if row.version is not None:
            entry["version"] = row.version
        if row.state is not None:
            entry.update(state=row.state.value, reason=row.reason)
        out.append(entry)
    return out


# -- model configuration: Triton's ``ModelConfig`` message as Triton's REST API writes it ------------------

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def model_config_json(message: Message) -> dict[str, Any]:
    """A message as JSON with proto field names, and 64-bit integers as numbers (as Triton's REST API gives
    them; protobuf's own JSON mapping turns them into strings)."""
    return _fix_int64(message, json_format.MessageToDict(message, preserving_proto_field_name=True))


def _repeated(fd: FieldDescriptor) -> bool:
    flag = getattr(fd, "is_repeated", None)
    if flag is None:  # protobuf < 6
        return bool(fd.label == FieldDescriptor.LABEL_REPEATED)
    return bool(flag() if callable(flag) else flag)


def _fix_int64(message: Message, data: dict[str, Any]) -> dict[str, Any]:
    for fd in message.DESCRIPTOR.fields:
        if fd.name not in data:
            continue
        value = getattr(message, fd.name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.message_type is not None:
                data[fd.name] = {str(k): _fix_int64(v, data[fd.name][str(k)]) for k, v in value.items()}
            elif value_fd.type in _INT64_TYPES:
                data[fd.name] = {k: int(v) for k, v in data[fd.name].items()}
        elif fd.message_type is not None:
            if _repeated(fd):
                data[fd.name] = [_fix_int64(m, d) for m, d in zip(value, data[fd.name])]
            else:
                data[fd.name] = _fix_int64(value, data[fd.name])
        elif fd.type in _INT64_TYPES:
            data[fd.name] = [int(v) for v in data[fd.name]] if _repeated(fd) else int(data[fd.name])
    return data


def region_status_json(regions: list[RegionStatus]) -> list[dict[str, Any]]:
    return [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]


def image_response_json(response: ImageResponse) -> dict[str, Any]:
    """Per image, its size and its labels (classification) or boxes (detection)."""
    results: list[dict[str, Any]] = []
    for r in response.results:
        result: dict[str, Any] = {"width": r.width, "height": r.height}
        if r.labels is not None:
            result["labels"] = [{"label": x.label, "index": x.index, "score": x.score} for x in r.labels]
        if r.detections is not None:
            result["boxes"] = [
                {"label": d.label, "index": d.index, "score": d.score, "box": [round(v, 2) for v in d.box]}
                for d in r.detections
            ]
        results.append(result)
    return {"model_name": response.model_name, "model_version": response.model_version, "results": results}
