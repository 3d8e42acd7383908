"""gRPC: ``inference.GRPCInferenceService`` on grpc.aio, as a thin adapter over the data plane."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb

from ..core.auth.guard import Guard
from ..core.dataplane import DataPlane
from ..core.errors import InferenceError, RateLimited, Status
from ..core.types import InferRequest
from .auth import OPERATIONS, authorization, guarded, peer
from .codec import decode_infer_request, encode_infer_response, parameter_value
from .encode import (
    model_metadata_message,
    model_statistics_message,
    repository_index_message,
    server_metadata_message,
    system_shared_memory_status_message,
)

log = logging.getLogger(__name__)

SERVICE_NAME = "inference.GRPCInferenceService"

GRPC_STATUS = {
    Status.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    Status.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Status.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Status.QUEUE_FULL: grpc.StatusCode.UNAVAILABLE,
    Status.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Status.CANCELLED: grpc.StatusCode.CANCELLED,
    Status.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    Status.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    Status.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Status.CONFLICT: grpc.StatusCode.FAILED_PRECONDITION,
    Status.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Status.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Status.INTERNAL: grpc.StatusCode.INTERNAL,
}


def local_client(context: Any) -> bool:
    """Whether the caller is on the device (loopback, a Unix socket)."""
    return peer(context).local


class _Metadata(Mapping[str, str]):
    """The call's metadata as a read-only mapping, read from grpc only when something asks (a route's sticky key)."""

    __slots__ = ("_context", "_items")

    def __init__(self, context: Any) -> None:
        self._context = context
        self._items: dict[str, str] | None = None

    def _read(self) -> dict[str, str]:
        if self._items is None:
            pairs = self._context.invocation_metadata() or ()
            self._items = {k: v for k, v in pairs if isinstance(v, str)}  # binary (-bin) values are bytes
        return self._items

    def __getitem__(self, key: str) -> str:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())


def _decode(message: pb.ModelInferRequest, context: Any) -> InferRequest:
    request = decode_infer_request(message)
    if request.uses_shared_memory():
        request.local_client = local_client(context)
    request.headers = _Metadata(context)
    request.transport = "grpc"
    return request


class InferenceService:
    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._dp.live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dp.ready())

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return server_metadata_message(self._dp.server_metadata())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._dp.model_ready(request.name, request.version))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return model_metadata_message(self._dp.model_metadata(request.name, request.version))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = self._dp.model_config(request.name, request.version)
        response = pb.ModelConfigResponse()
        response.config.CopyFrom(config)
        return response

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        return model_statistics_message(self._dp.model_statistics(request.name, request.version))

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        return repository_index_message(self._dp.repository_index(request.ready))

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        config = None
        if "config" in request.parameters:
            config = parameter_value(request.parameters["config"])
        await self._dp.load_model(request.model_name, config if isinstance(config, str) else None)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self._dp.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Any
    ) -> pb.SystemSharedMemoryStatusResponse:
        regions = self._dp.system_shared_memory_status(request.name, local_client(context))
        return system_shared_memory_status_message(regions)

    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Any
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._dp.register_system_shared_memory(
            request.name, request.key, request.offset, request.byte_size, local_client(context)
        )
        return pb.SystemSharedMemoryRegisterResponse()

    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._dp.unregister_system_shared_memory(request.name, local_client(context))
        return pb.SystemSharedMemoryUnregisterResponse()

    async def CudaSharedMemoryStatus(
        self, request: pb.CudaSharedMemoryStatusRequest, context: Any
    ) -> pb.CudaSharedMemoryStatusResponse:
        self._dp.cuda_shared_memory_status(request.name)  # empty, or NotFound for a name
        return pb.CudaSharedMemoryStatusResponse()

    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Any
    ) -> pb.CudaSharedMemoryRegisterResponse:
        self._dp.register_cuda_shared_memory(request.name)
        return pb.CudaSharedMemoryRegisterResponse()

    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Any
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        return pb.CudaSharedMemoryUnregisterResponse()  # nothing is ever registered

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        response = await self._dp.infer(_decode(request, context))
        return encode_infer_response(response)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Each request of the stream runs as soon as it arrives; responses go back as they finish."""
        results: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def run(message: pb.ModelInferRequest | Malformed) -> None:
            if isinstance(message, Malformed):
                results.put_nowait(pb.ModelStreamInferResponse(error_message=message.message))
                return
            try:
                request = _decode(message, context)
                request.transport = "grpc-stream"
                response = encode_infer_response(await self._dp.infer(request))
                results.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
            except InferenceError as exc:
                error = pb.ModelStreamInferResponse(error_message=exc.message)
                error.infer_response.id = message.id
                error.infer_response.model_name = message.model_name
                results.put_nowait(error)

        async def read() -> None:
            try:
                async for message in request_iterator:
                    task = asyncio.ensure_future(run(message))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                results.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await results.get()) is not None:
                yield item
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()


class Malformed:
    """A request message answered with an error instead of being run: one that did not parse (INVALID_ARGUMENT
    for a unary method), or, on a stream, one over its key's rate limit; a stream gets the message in its place."""

    def __init__(self, message: str) -> None:
        self.message = message


def _parser(message_type: Any) -> Any:
    def parse(data: bytes) -> Any:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Malformed(f"malformed {message_type.DESCRIPTOR.name} message: {exc}")

    return parse


def _checked(method: Any) -> Any:
    """A unary method that answers a malformed request, or any InferenceError, with its gRPC status."""

    async def handler(request: Any, context: Any) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        try:
            return await method(request, context)
        except InferenceError as exc:
            await _abort(context, exc)

    return handler


async def _abort(context: Any, exc: InferenceError) -> None:
    if isinstance(exc, RateLimited):
        context.set_trailing_metadata((("retry-after", str(exc.retry_after_s)),))
    await context.abort(GRPC_STATUS[exc.status], exc.message)


def _guarded_stream(guard: Guard, method: Any) -> Any:
    """``ModelStreamInfer`` with auth on: the credentials are checked when the stream opens (refused: the stream
    ends with the status); each message after the first draws on the key's rate limit too, and one over it gets
    the error in its place on the stream, which goes on."""

    async def handler(request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        try:
            principal = guard.admit(authorization(context), peer(context), OPERATIONS["ModelStreamInfer"])
        except InferenceError as exc:
            await _abort(context, exc)
            return

        async def metered() -> AsyncIterator[Any]:
            first = True
            async for message in request_iterator:
                limited = None if first else guard.charge(principal)
                first = False
                yield Malformed(limited.message) if limited is not None else message

        async for response in method(metered(), context):
            yield response

    return handler


_UNARY = [
    "ServerLive",
    "ServerReady",
    "ServerMetadata",
    "ModelReady",
    "ModelMetadata",
    "ModelInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
]


def handler_table(dataplane: DataPlane) -> dict[str, grpc.RpcMethodHandler]:
    """The method handlers of ``inference.GRPCInferenceService``, by method name."""
    service = InferenceService(dataplane)
    guard = dataplane.guard  # None with auth off: the methods are called directly
    handlers = {}
    for name in _UNARY:
        method = getattr(service, name)
        if guard is not None and OPERATIONS[name].required is not None:
            method = guarded(guard, OPERATIONS[name], method)
        handlers[name] = grpc.unary_unary_rpc_method_handler(
            _checked(method),
            request_deserializer=_parser(getattr(pb, name + "Request")),
            response_serializer=getattr(pb, name + "Response").SerializeToString,
        )
    stream = service.ModelStreamInfer
    if guard is not None:
        stream = _guarded_stream(guard, stream)
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        stream,
        request_deserializer=_parser(pb.ModelInferRequest),
        response_serializer=pb.ModelStreamInferResponse.SerializeToString,
    )
    return handlers


def create_server(dataplane: DataPlane, max_request_bytes: int) -> grpc.aio.Server:
    """A grpc.aio server with ``inference.GRPCInferenceService``; bind it with ``add_insecure_port``."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    handlers = handler_table(dataplane)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    return server
