"""REST: the KServe v2 HTTP endpoints and Triton's extensions, as a thin adapter over the data plane.

:func:`create_app` declares the route table over the handlers of :class:`~appliance.rest.endpoints.Endpoints`.
Errors are ``{"error": "..."}`` with the status from :data:`HTTP_STATUS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Route, WebSocketRoute

from .. import __version__
from ..core.auth.guard import Guard
from ..core.auth.roles import Operation
from ..core.dataplane import DataPlane
from ..core.errors import InferenceError, RateLimited, Status
from ..core.logbuffer import RecentLogs
from ..device.metrics import DeviceMetrics
from .auth import AuditEndpoint, guarded, guarded_endpoint
from .autoscaler import AutoscalerEndpoint
from .device import DeviceEndpoint
from .endpoints import Endpoints
from .engines import EnginesEndpoint
from .history import HistoryEndpoint
from .keys import KeysEndpoint
from .panel import PanelEndpoint
from .support import SupportEndpoint
from .update import UpdateEndpoint
from .websocket import InferSocket

HTTP_STATUS = {
    Status.INVALID_ARGUMENT: 400,
    Status.NOT_FOUND: 404,
    Status.UNAVAILABLE: 503,
    Status.QUEUE_FULL: 503,
    Status.DEADLINE_EXCEEDED: 504,
    Status.CANCELLED: 499,
    Status.TOO_LARGE: 413,
    Status.ALREADY_EXISTS: 400,  # as Triton answers it
    Status.UNSUPPORTED: 400,
    Status.PERMISSION_DENIED: 403,
    Status.CONFLICT: 409,
    Status.UNAUTHENTICATED: 401,
    Status.RATE_LIMITED: 429,
    Status.INTERNAL: 500,
}

_INFER_BODY_DOC = {
    "requestBody": {
        "description": "KServe v2 inference request (JSON), optionally followed by binary tensor data whose JSON "
        "header length is given in the Inference-Header-Content-Length header.",
        "content": {"application/json": {"schema": {"type": "object", "required": ["inputs"]}}},
    }
}

_IMAGE_DOC = {
    "requestBody": {
        "description": "One JPEG or PNG as the body, or several as multipart/form-data fields named 'image' (a "
        "batch). The model declares its preprocessing and postprocessing in config.pbtxt (image_* parameters).",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
        },
    }
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def inference_error(_: Request, exc: InferenceError) -> JSONResponse:
    response = _error(HTTP_STATUS[exc.status], exc.message)
    if exc.status is Status.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return _error(400, problems)


def routes(
    endpoints: Endpoints,
    guard: Guard | None = None,
    audit: AuditEndpoint | None = None,
    device: DeviceEndpoint | None = None,
    infer_socket: InferSocket | None = None,
    support: SupportEndpoint | None = None,
) -> list[BaseRoute]:
    """The route table. Order matters where paths overlap: ``/v2/models/stats`` before ``/v2/models/{model}``.

    Each route names its :class:`Operation`; with a ``guard`` (auth on) every route but health's checks the
    request's credentials for it first, with none (auth off) the handlers are called directly. The WebSocket
    routes (``infer_socket``) check the handshake themselves (:class:`~appliance.rest.websocket.InferSocket`)."""
    e = endpoints
    audit = audit or AuditEndpoint(guard)
    autoscaler = AutoscalerEndpoint(endpoints.dataplane.autoscaler)
    history = HistoryEndpoint(endpoints.dataplane.history, endpoints.dataplane.events)
    support = support or SupportEndpoint(endpoints.dataplane, None, None)
    keys = KeysEndpoint(guard)
    update = UpdateEndpoint(endpoints.dataplane.settings)
    engines = EnginesEndpoint(endpoints.dataplane.settings)
    device = device or DeviceEndpoint(None)
    version = "/v2/models/{model}/versions/{version}"
    system, cuda = "/v2/systemsharedmemory", "/v2/cudasharedmemory"
    op = Operation

    def route(method: str, path: str, endpoint: Callable[..., Any], operation: Operation, **kw: Any) -> APIRoute:
        if guard is not None and operation.required is not None:
            endpoint = guarded_endpoint(guard, operation, endpoint)
        return APIRoute(path, endpoint, methods=[method], **kw)

    def get(path: str, endpoint: Callable[..., Any], operation: Operation, tag: str, summary: str) -> APIRoute:
        return route("GET", path, endpoint, operation, tags=[tag], summary=summary)

    def post(
        path: str, endpoint: Callable[..., Any], operation: Operation, tag: str, summary: str, doc: Any = None
    ) -> APIRoute:
        return route("POST", path, endpoint, operation, tags=[tag], summary=summary, openapi_extra=doc)

    infer = guarded(guard, op.INFER, e.infer_route) if guard is not None else e.infer_route
    image = guarded(guard, op.INFER, e.infer_image_route) if guard is not None else e.infer_image_route
    shm = "shared memory"
    sockets = (
        [
            WebSocketRoute(f"{version}/infer/ws", infer_socket.serve),
            WebSocketRoute("/v2/models/{model}/infer/ws", infer_socket.serve),
        ]
        if infer_socket is not None
        else []
    )
    return [
        *sockets,
        # Inference first, as plain Starlette routes: matched at the first or second try and called without
        # FastAPI's dependency solving, which cost about 100 us a request (half the REST path, in process). The
        # APIRoutes of the same paths below are never reached; they document the paths in /openapi.json.
        Route(f"{version}/infer", infer, methods=["POST"], include_in_schema=False),
        Route("/v2/models/{model}/infer", infer, methods=["POST"], include_in_schema=False),
        Route(f"{version}/infer/image", image, methods=["POST"], include_in_schema=False),
        Route("/v2/models/{model}/infer/image", image, methods=["POST"], include_in_schema=False),
        get("/health", e.health, op.HEALTH, "health", "Liveness: the process is serving HTTP"),
        get("/ready", e.ready, op.HEALTH, "health", "Readiness: 200 when accepting inference, 503 otherwise"),
        get("/metrics", e.metrics, op.METRICS, "health", "Prometheus metrics"),
        get("/v2", e.server_metadata, op.SERVER_METADATA, "server", "Server metadata"),
        get("/v2/health/live", e.server_live, op.HEALTH, "server", "Server live (200) or not (400)"),
        get("/v2/health/ready", e.server_ready, op.HEALTH, "server", "Server ready (200) or not (400)"),
        get("/v2/models/stats", e.all_stats, op.MODEL_STATISTICS, "statistics", "Statistics of every model"),
        get(version, e.model_metadata, op.MODEL_METADATA, "model", "Model version metadata"),
        get("/v2/models/{model}", e.model_metadata, op.MODEL_METADATA, "model", "Model metadata"),
        get(f"{version}/ready", e.model_ready, op.MODEL_READY, "model", "Model version ready"),
        get("/v2/models/{model}/ready", e.model_ready, op.MODEL_READY, "model", "Model ready (200) or not (400)"),
        get(f"{version}/config", e.model_config, op.MODEL_CONFIG, "model", "Model version configuration"),
        get("/v2/models/{model}/config", e.model_config, op.MODEL_CONFIG, "model", "Model configuration"),
        get(f"{version}/stats", e.model_stats, op.MODEL_STATISTICS, "statistics", "Model version statistics"),
        get("/v2/models/{model}/stats", e.model_stats, op.MODEL_STATISTICS, "statistics", "Model statistics"),
        post(f"{version}/infer", e.infer, op.INFER, "inference", "Inference on a model version", _INFER_BODY_DOC),
        post("/v2/models/{model}/infer", e.infer, op.INFER, "inference", "Inference", _INFER_BODY_DOC),
        post(f"{version}/infer/image", e.infer_image, op.INFER, "inference", "Images on a version", _IMAGE_DOC),
        post("/v2/models/{model}/infer/image", e.infer_image, op.INFER, "inference", "Image inference", _IMAGE_DOC),
        post("/v2/repository/index", e.repository_index, op.REPOSITORY_INDEX, "repository", "Models and states"),
        post("/v2/repository/models/{model}/load", e.repository_load, op.REPOSITORY_LOAD, "repository", "Load"),
        post("/v2/repository/models/{model}/unload", e.repository_unload, op.REPOSITORY_UNLOAD, "repository", "Unload"),
        post("/v2/repository/models/{model}/instances", e.model_instances, op.MODEL_INSTANCES, "repository", "Count"),
        post("/v2/repository/models/{model}/park", e.model_park, op.MODEL_PARK, "repository", "Unload until needed"),
        post("/v2/repository/models/{model}/warmup", e.model_warmup, op.MODEL_WARMUP, "repository", "Warm up, timed"),
        get("/v2/engines", engines.engines, op.ENGINES_READ, "repository", "Engine manifests, checked here"),
        get("/v2/routes", e.routes, op.ROUTES_READ, "routes", "Every route, with its arms' figures and decisions"),
        get("/v2/routes/{name}", e.route, op.ROUTES_READ, "routes", "One route"),
        route("PUT", "/v2/routes/{name}", e.route_declare, op.ROUTE_DECLARE, tags=["routes"], summary="Declare"),
        route("DELETE", "/v2/routes/{name}", e.route_delete, op.ROUTE_DELETE, tags=["routes"], summary="Delete"),
        post("/v2/routes/{name}/{action}", e.route_action, op.ROUTE_ACTION, "routes", "promote/rollback/pause/resume"),
        get("/v2/audit", audit.audit, op.AUDIT_READ, "audit", "The newest audit log entries (?limit=N)"),
        get("/v2/device", device.device, op.DEVICE_READ, "device", "GPU, temperatures, power, memory, power mode"),
        get("/v2/autoscaler/decisions", autoscaler.decisions, op.AUTOSCALER_READ, "autoscaler", "Newest decisions"),
        post("/v2/autoscaler/decisions", autoscaler.report, op.AUTOSCALER_REPORT, "autoscaler", "Report decisions"),
        get("/v2/history", history.history, op.HISTORY_READ, "history", "The last hours of figures (?model=&since=)"),
        get("/v2/events", history.events, op.HISTORY_READ, "history", "The timeline (?model=&since=&limit=)"),
        get("/v2/keys", keys.keys, op.KEYS_READ, "keys", "The API keys (never their hashes)"),
        route("PUT", "/v2/keys/{name}", keys.create, op.KEY_CREATE, tags=["keys"], summary="Create (shown once)"),
        route("DELETE", "/v2/keys/{name}", keys.revoke, op.KEY_REVOKE, tags=["keys"], summary="Revoke"),
        get("/v2/settings", support.settings, op.SETTINGS_READ, "support", "The effective settings, secrets masked"),
        get("/v2/support/bundle", support.bundle, op.SUPPORT_BUNDLE, "support", "A support archive (.tar.gz)"),
        get("/v2/logs", support.logs, op.LOGS_READ, "support", "Newest log lines, the service's or a unit's"),
        get("/v2/units", support.unit_states, op.UNITS_READ, "support", "The state of the appliance's units"),
        get("/v2/update", update.status, op.UPDATE_READ, "update", "Boot slot, pending update, outcomes"),
        post("/v2/update", update.apply, op.UPDATE_APPLY, "update", "Verify and queue a signed .swu bundle"),
        get(f"{system}/status", e.system_shared_memory_status, op.SHARED_MEMORY_STATUS, shm, "Every region"),
        get(f"{system}/region/{{name}}/status", e.system_shared_memory_status, op.SHARED_MEMORY_STATUS, shm, "One"),
        post(
            f"{system}/region/{{name}}/register",
            e.system_shared_memory_register,
            op.SHARED_MEMORY_REGISTER,
            shm,
            "Register a region",
        ),
        post(
            f"{system}/region/{{name}}/unregister",
            e.system_shared_memory_unregister,
            op.SHARED_MEMORY_UNREGISTER,
            shm,
            "Unregister one",
        ),
        post(f"{system}/unregister", e.system_shared_memory_unregister, op.SHARED_MEMORY_UNREGISTER, shm, "All"),
        get(f"{cuda}/status", e.cuda_shared_memory_status, op.SHARED_MEMORY_STATUS, shm, "CUDA regions: none"),
        get(f"{cuda}/region/{{name}}/status", e.cuda_shared_memory_status, op.SHARED_MEMORY_STATUS, shm, "Not found"),
        post(f"{cuda}/region/{{name}}/register", e.cuda_shared_memory_register, op.SHARED_MEMORY_REGISTER, shm, "No"),
        post(
            f"{cuda}/region/{{name}}/unregister", e.cuda_shared_memory_unregister, op.SHARED_MEMORY_UNREGISTER, shm, "-"
        ),
        post(f"{cuda}/unregister", e.cuda_shared_memory_unregister, op.SHARED_MEMORY_UNREGISTER, shm, "Nothing to do"),
        *PanelEndpoint(guard).routes(),
    ]


def create_app(
    dataplane: DataPlane,
    max_request_bytes: int,
    websocket_max_in_flight: int = 16,
    device: DeviceMetrics | None = None,
    logs: RecentLogs | None = None,
) -> FastAPI:
    infer_socket = InferSocket(dataplane, max_request_bytes, websocket_max_in_flight, HTTP_STATUS)
    return FastAPI(
        title="ML Inference Appliance",
        version=__version__,
        description="KServe v2 / Open Inference Protocol with Triton's extensions.",
        routes=routes(
            Endpoints(dataplane, max_request_bytes),
            dataplane.guard,
            device=DeviceEndpoint(device),
            infer_socket=infer_socket,
            support=SupportEndpoint(dataplane, device, logs),
        ),
        exception_handlers={InferenceError: inference_error, RequestValidationError: validation_error},
    )
