"""gRPC side of auth: the ``authorization`` metadata and the peer handed to the core's guard.

``service.handler_table`` wraps each unary method in :func:`guarded` with the operation :data:`OPERATIONS` names,
and ``ModelStreamInfer`` in ``service._guarded_stream``, only when auth is on; with auth off the methods are
called directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..core.auth.guard import Guard
from ..core.auth.roles import Operation, Peer
from ..core.shared_memory import is_local_client

#: The operation of each method of ``inference.GRPCInferenceService``, as REST names it for the same call.
OPERATIONS = {
    "ServerLive": Operation.HEALTH,
    "ServerReady": Operation.HEALTH,
    "ServerMetadata": Operation.SERVER_METADATA,
    "ModelReady": Operation.MODEL_READY,
    "ModelMetadata": Operation.MODEL_METADATA,
    "ModelConfig": Operation.MODEL_CONFIG,
    "ModelStatistics": Operation.MODEL_STATISTICS,
    "ModelInfer": Operation.INFER,
    "ModelStreamInfer": Operation.INFER,
    "RepositoryIndex": Operation.REPOSITORY_INDEX,
    "RepositoryModelLoad": Operation.REPOSITORY_LOAD,
    "RepositoryModelUnload": Operation.REPOSITORY_UNLOAD,
    "SystemSharedMemoryStatus": Operation.SHARED_MEMORY_STATUS,
    "SystemSharedMemoryRegister": Operation.SHARED_MEMORY_REGISTER,
    "SystemSharedMemoryUnregister": Operation.SHARED_MEMORY_UNREGISTER,
    "CudaSharedMemoryStatus": Operation.SHARED_MEMORY_STATUS,
    "CudaSharedMemoryRegister": Operation.SHARED_MEMORY_REGISTER,
    "CudaSharedMemoryUnregister": Operation.SHARED_MEMORY_UNREGISTER,
}


def peer(context: Any) -> Peer:
    """The client: from grpc's peer string (``ipv4:127.0.0.1:5000``, ``ipv6:[::1]:5000``, ``unix:/run/x.sock``);
    for a connection from the device itself that carries ``x-forwarded-for`` (nginx's ``grpc_pass`` on port 443
    sets it to the client's address), the address it names, as uvicorn does for REST. So a client that comes
    through nginx is not taken for a local one (shared memory is for local clients only), and the audit log names
    it; a remote client cannot claim to be local, since only a loopback peer's header is believed."""
    transport = _transport_peer(context)
    if transport.local:
        for key, value in context.invocation_metadata() or ():
            if key == "x-forwarded-for" and isinstance(value, str) and value.strip():
                address = value.split(",")[-1].strip()
                return Peer(address, is_local_client(address))
    return transport


def _transport_peer(context: Any) -> Peer:
    text: str = context.peer() or ""
    scheme, _, address = text.partition(":")
    if scheme.startswith("unix"):
        return Peer(text, True)
    if scheme == "ipv6":
        return Peer(address, is_local_client(address.rpartition("]")[0].lstrip("[")))
    if scheme == "ipv4":
        return Peer(address, is_local_client(address.rpartition(":")[0]))
    return Peer(text, False)


def authorization(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            return value
    return None


def target(request: Any) -> str:
    """The model or region a request names (``model_name`` of load / unload / infer, else ``name``)."""
    return str(getattr(request, "model_name", "") or getattr(request, "name", ""))


def guarded(
    guard: Guard, operation: Operation, method: Callable[[Any, Any], Awaitable[Any]]
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def admitted(request: Any, context: Any) -> Any:
        with guard.admitted(authorization(context), peer(context), operation, target(request)):
            return await method(request, context)

    async def admit(request: Any, context: Any) -> Any:
        guard.admit(authorization(context), peer(context), operation)
        return await method(request, context)

    return admitted if operation.audited else admit
