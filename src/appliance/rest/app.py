"""REST: the KServe v2 HTTP endpoints and Triton's extensions, as a thin adapter over the data plane.

Inference bodies are read raw (no pydantic model) so the binary tensor data extension and large tensors cost
no extra copies. Errors are ``{"error": "..."}`` with the status from :data:`HTTP_STATUS`.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..core.dataplane import DataPlane
from ..core.errors import InferenceError, InvalidArgument, Status, TooLarge
from .codec import HEADER_LENGTH, decode_infer_request, encode_infer_response
from .encode import (
    model_config_json,
    model_metadata_json,
    model_statistics_json,
    repository_index_json,
    server_metadata_json,
)

HTTP_STATUS = {
    Status.INVALID_ARGUMENT: 400,
    Status.NOT_FOUND: 404,
    Status.UNAVAILABLE: 503,
    Status.QUEUE_FULL: 503,
    Status.DEADLINE_EXCEEDED: 504,
    Status.CANCELLED: 499,
    Status.TOO_LARGE: 413,
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


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed per Content-Encoding; TooLarge past ``limit`` bytes either way."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        decompressor = zlib.decompressobj(wbits)
        try:
            body = decompressor.decompress(body, limit + 1)
        except zlib.error as exc:
            raise InvalidArgument(f"request body is not valid {encoding} data: {exc}") from None
        if len(body) > limit or decompressor.unconsumed_tail:
            raise TooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    elif encoding not in ("", "identity"):
        raise InvalidArgument(f"unsupported Content-Encoding '{encoding}'")
    return body


def _compress(body: bytes, accept: str) -> tuple[bytes, str | None]:
    accept = accept.lower()
    if "gzip" in accept:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in accept:
        return zlib.compress(body, 1), "deflate"
    return body, None


def create_app(dataplane: DataPlane, max_request_bytes: int) -> FastAPI:
    app = FastAPI(
        title="ML Inference Appliance",
        version=__version__,
        description="KServe v2 / Open Inference Protocol with Triton's extensions.",
    )

    @app.exception_handler(InferenceError)
    async def inference_error(_: Request, exc: InferenceError) -> JSONResponse:
        return _error(HTTP_STATUS[exc.status], exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(400, problems)

    # -- health, as every seed has it ------------------------------------------------------------

    @app.get("/health", tags=["health"], summary="Liveness: the process is serving HTTP")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", tags=["health"], summary="Readiness: 200 when accepting inference, 503 otherwise")
    async def ready() -> Response:
        if dataplane.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(dataplane.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- server ----------------------------------------------------------------------------------

    @app.get("/v2", tags=["server"], summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return server_metadata_json(dataplane.server_metadata())

    @app.get("/v2/health/live", tags=["server"], summary="Server live (200) or not (400)")
    async def server_live() -> Response:
        return Response(status_code=200 if dataplane.live() else 400)

    @app.get("/v2/health/ready", tags=["server"], summary="Server ready (200) or not (400)")
    async def server_ready() -> Response:
        return Response(status_code=200 if dataplane.ready() else 400)

    # -- models ----------------------------------------------------------------------------------

    @app.get("/v2/models/stats", tags=["statistics"], summary="Statistics of every model")
    async def all_stats() -> dict[str, Any]:
        return model_statistics_json(dataplane.model_statistics())

    @app.get("/v2/models/{model}", tags=["model"], summary="Model metadata")
    @app.get("/v2/models/{model}/versions/{version}", tags=["model"], summary="Model version metadata")
    async def model_metadata(model: str, version: str = "") -> dict[str, Any]:
        return model_metadata_json(dataplane.model_metadata(model, version))

    @app.get("/v2/models/{model}/ready", tags=["model"], summary="Model ready (200) or not (400)")
    @app.get("/v2/models/{model}/versions/{version}/ready", tags=["model"], summary="Model version ready")
    async def model_ready(model: str, version: str = "") -> Response:
        return Response(status_code=200 if dataplane.model_ready(model, version) else 400)

    @app.get("/v2/models/{model}/config", tags=["model"], summary="Model configuration (Triton extension)")
    @app.get("/v2/models/{model}/versions/{version}/config", tags=["model"], summary="Model version configuration")
    async def model_config(model: str, version: str = "") -> dict[str, Any]:
        return model_config_json(dataplane.model_config(model, version))

    @app.get("/v2/models/{model}/stats", tags=["statistics"], summary="Model statistics (Triton extension)")
    @app.get("/v2/models/{model}/versions/{version}/stats", tags=["statistics"], summary="Model version statistics")
    async def model_stats(model: str, version: str = "") -> dict[str, Any]:
        return model_statistics_json(dataplane.model_statistics(model, version))

    @app.post("/v2/models/{model}/infer", tags=["inference"], summary="Inference", openapi_extra=_INFER_BODY_DOC)
    @app.post(
        "/v2/models/{model}/versions/{version}/infer",
        tags=["inference"],
        summary="Inference on a model version",
        openapi_extra=_INFER_BODY_DOC,
    )
    async def infer(request: Request, model: str, version: str = "") -> Response:
        body = await _read_body(request, max_request_bytes)
        header = request.headers.get(HEADER_LENGTH)
        if header is not None and not header.isdigit():
            raise InvalidArgument(f"Inference-Header-Content-Length '{header}' is not a number")
        infer_request, binary_default = decode_infer_request(
            body, int(header) if header is not None else None, model, version
        )
        task = asyncio.ensure_future(dataplane.infer(infer_request))
        # A client that disconnects cancels its request: it is dropped if it has not reached a batch yet.
        watcher = asyncio.ensure_future(request.receive())

        def client_gone(_: asyncio.Future[Any]) -> None:
            task.cancel()

        watcher.add_done_callback(client_gone)
        try:
            response = await task
        except asyncio.CancelledError:
            if watcher.done() and not watcher.cancelled():
                return Response(status_code=499)
            raise
        finally:
            watcher.remove_done_callback(client_gone)
            watcher.cancel()
        payload, header_length = encode_infer_response(response, infer_request, binary_default)
        headers = {}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        payload, encoding = (
            _compress(payload, request.headers.get("accept-encoding", "")) if len(payload) > 1024 else (payload, None)
        )
        if encoding:
            headers["Content-Encoding"] = encoding
        media = "application/octet-stream" if header_length is not None else "application/json"
        return Response(payload, headers=headers, media_type=media)

    # -- repository ------------------------------------------------------------------------------

    async def _json_body(request: Request) -> dict[str, Any]:
        body = await _read_body(request, max_request_bytes)
        if not body.strip():
            return {}
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"malformed JSON in request body: {exc}") from None
        if not isinstance(doc, dict):
            raise InvalidArgument("request body must be a JSON object")
        return doc

    @app.post("/v2/repository/index", tags=["repository"], summary="Models in the repository and their state")
    async def repository_index(request: Request) -> Response:
        doc = await _json_body(request)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument("'ready' must be a boolean")
        return JSONResponse(repository_index_json(dataplane.repository_index(ready)))

    @app.post("/v2/repository/models/{model}/load", tags=["repository"], summary="Load or reload a model")
    async def repository_load(model: str, request: Request) -> Response:
        doc = await _json_body(request)
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidArgument("'parameters' must be an object")
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgument("parameter 'config' must be a JSON string")
        await dataplane.load_model(model, config)
        return Response(status_code=200)

    @app.post("/v2/repository/models/{model}/unload", tags=["repository"], summary="Unload a model")
    async def repository_unload(model: str, request: Request) -> Response:
        await _json_body(request)
        await dataplane.unload_model(model)
        return Response(status_code=200)

    return app
