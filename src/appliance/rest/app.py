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
from starlette.routing import BaseRoute, Route

from .. import __version__
from ..core.dataplane import DataPlane
from ..core.errors import InferenceError, Status
from .endpoints import Endpoints

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
    Status.INTERNAL: 500,
}

_INFER_BODY_DOC = {
    "requestBody": {
        "description": "KServe v2 inference request (JSON), optionally followed by binary tensor data whose JSON "
        "header length is given in the Inference-Header-Content-Length header.",
        "content": {"application/json": {"schema": {"type": "object", "required": ["inputs"]}}},
    }
}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def inference_error(_: Request, exc: InferenceError) -> JSONResponse:
    return _error(HTTP_STATUS[exc.status], exc.message)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return _error(400, problems)


def routes(endpoints: Endpoints) -> list[BaseRoute]:
    """The route table. Order matters where paths overlap: ``/v2/models/stats`` before ``/v2/models/{model}``."""
    e = endpoints
    version = "/v2/models/{model}/versions/{version}"
    system, cuda = "/v2/systemsharedmemory", "/v2/cudasharedmemory"

    def get(path: str, endpoint: Callable[..., Any], tag: str, summary: str) -> APIRoute:
        return APIRoute(path, endpoint, methods=["GET"], tags=[tag], summary=summary)

    def post(path: str, endpoint: Callable[..., Any], tag: str, summary: str, doc: Any = None) -> APIRoute:
        return APIRoute(path, endpoint, methods=["POST"], tags=[tag], summary=summary, openapi_extra=doc)

    return [
        # Inference first, as plain Starlette routes: matched at the first or second try and called without
        # FastAPI's dependency solving, which cost about 100 us a request (half the REST path, in process). The
        # APIRoutes of the same paths below are never reached; they document the paths in /openapi.json.
        Route(f"{version}/infer", e.infer_route, methods=["POST"], include_in_schema=False),
        Route("/v2/models/{model}/infer", e.infer_route, methods=["POST"], include_in_schema=False),
        get("/health", e.health, "health", "Liveness: the process is serving HTTP"),
        get("/ready", e.ready, "health", "Readiness: 200 when accepting inference, 503 otherwise"),
        get("/metrics", e.metrics, "health", "Prometheus metrics"),
        get("/v2", e.server_metadata, "server", "Server metadata"),
        get("/v2/health/live", e.server_live, "server", "Server live (200) or not (400)"),
        get("/v2/health/ready", e.server_ready, "server", "Server ready (200) or not (400)"),
        get("/v2/models/stats", e.all_stats, "statistics", "Statistics of every model"),
        get(version, e.model_metadata, "model", "Model version metadata"),
        get("/v2/models/{model}", e.model_metadata, "model", "Model metadata"),
        get(f"{version}/ready", e.model_ready, "model", "Model version ready"),
        get("/v2/models/{model}/ready", e.model_ready, "model", "Model ready (200) or not (400)"),
        get(f"{version}/config", e.model_config, "model", "Model version configuration"),
        get("/v2/models/{model}/config", e.model_config, "model", "Model configuration (Triton extension)"),
        get(f"{version}/stats", e.model_stats, "statistics", "Model version statistics"),
        get("/v2/models/{model}/stats", e.model_stats, "statistics", "Model statistics (Triton extension)"),
        post(f"{version}/infer", e.infer, "inference", "Inference on a model version", _INFER_BODY_DOC),
        post("/v2/models/{model}/infer", e.infer, "inference", "Inference", _INFER_BODY_DOC),
        post("/v2/repository/index", e.repository_index, "repository", "Models in the repository and their state"),
        post("/v2/repository/models/{model}/load", e.repository_load, "repository", "Load or reload a model"),
        post("/v2/repository/models/{model}/unload", e.repository_unload, "repository", "Unload a model"),
        get("/v2/routes", e.routes, "routes", "Every route, with its arms' figures and canary decisions"),
        get("/v2/routes/{name}", e.route, "routes", "One route"),
        APIRoute("/v2/routes/{name}", e.route_declare, methods=["PUT"], tags=["routes"], summary="Declare or replace"),
        APIRoute("/v2/routes/{name}", e.route_delete, methods=["DELETE"], tags=["routes"], summary="Delete a route"),
        post("/v2/routes/{name}/{action}", e.route_action, "routes", "Canary: promote, rollback, pause or resume"),
        get(f"{system}/status", e.system_shared_memory_status, "shared memory", "Every system shared memory region"),
        get(f"{system}/region/{{name}}/status", e.system_shared_memory_status, "shared memory", "One region"),
        post(
            f"{system}/region/{{name}}/register", e.system_shared_memory_register, "shared memory", "Register a region"
        ),
        post(
            f"{system}/region/{{name}}/unregister", e.system_shared_memory_unregister, "shared memory", "Unregister one"
        ),
        post(f"{system}/unregister", e.system_shared_memory_unregister, "shared memory", "Unregister every region"),
        get(f"{cuda}/status", e.cuda_shared_memory_status, "shared memory", "CUDA regions: always none"),
        get(f"{cuda}/region/{{name}}/status", e.cuda_shared_memory_status, "shared memory", "CUDA region: not found"),
        post(f"{cuda}/region/{{name}}/register", e.cuda_shared_memory_register, "shared memory", "Not supported"),
        post(f"{cuda}/region/{{name}}/unregister", e.cuda_shared_memory_unregister, "shared memory", "Nothing to do"),
        post(f"{cuda}/unregister", e.cuda_shared_memory_unregister, "shared memory", "Nothing to do"),
    ]


def create_app(dataplane: DataPlane, max_request_bytes: int) -> FastAPI:
    return FastAPI(
        title="ML Inference Appliance",
        version=__version__,
        description="KServe v2 / Open Inference Protocol with Triton's extensions.",
        routes=routes(Endpoints(dataplane, max_request_bytes)),
        exception_handlers={InferenceError: inference_error, RequestValidationError: validation_error},
    )
