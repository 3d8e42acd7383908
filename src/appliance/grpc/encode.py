"""Core values -> ``inference.GRPCInferenceService`` response messages: server and model metadata, model
statistics and the repository index, built field by field (model configuration is already Triton's message)."""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb

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


def server_metadata_message(meta: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)


def _tensor_message(tensor: TensorMetadata) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)


def model_metadata_message(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[_tensor_message(t) for t in meta.inputs],
        outputs=[_tensor_message(t) for t in meta.outputs],
    )


def _duration_message(duration: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=duration.count, ns=duration.ns)


def _batch_message(batch: BatchStatistics) -> pb.InferBatchStatistics:
    return pb.InferBatchStatistics(
        batch_size=batch.batch_size,
        compute_input=_duration_message(batch.compute_input),
        compute_infer=_duration_message(batch.compute_infer),
        compute_output=_duration_message(batch.compute_output),
    )


def _statistics_message(stats: ModelStatistics) -> pb.ModelStatistics:
    inference = stats.inference_stats
    return pb.ModelStatistics(
        name=stats.name,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration_message(inference.success),
            fail=_duration_message(inference.fail),
            queue=_duration_message(inference.queue),
            compute_input=_duration_message(inference.compute_input),
            compute_infer=_duration_message(inference.compute_infer),
            compute_output=_duration_message(inference.compute_output),
            cache_hit=_duration_message(inference.cache_hit),
            cache_miss=_duration_message(inference.cache_miss),
        ),
        batch_stats=[_batch_message(b) for b in stats.batch_stats],
    )


def model_statistics_message(stats: list[ModelStatistics]) -> pb.ModelStatisticsResponse:
    return pb.ModelStatisticsResponse(model_stats=[_statistics_message(s) for s in stats])


def repository_index_message(rows: list[RepositoryModel]) -> pb.RepositoryIndexResponse:
    """A row without a version or state has them empty, as proto3 leaves fields that are not set."""
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=row.name,
                version=row.version or "",
                state=row.state.value if row.state is not None else "",
                reason=row.reason,
            )
            for row in rows
        ]
    )


def system_shared_memory_status_message(regions: list[RegionStatus]) -> pb.SystemSharedMemoryStatusResponse:
    message = pb.SystemSharedMemoryStatusResponse()
    for region in regions:
        entry = message.regions[region.name]
        entry.name = region.name
        entry.key = region.key
        entry.offset = region.offset
        entry.byte_size = region.byte_size
    return message
