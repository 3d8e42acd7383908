"""REST: the handlers of the KServe v2 endpoints and Triton's extensions, one method each.

Each decodes its request, calls one data plane method and encodes the result; ``rest.app`` declares which path
and HTTP method reach which handler. Inference bodies are read raw (no pydantic model) so the binary tensor
data extension and large tensors cost no extra copies.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import HTTPConnection

from ..core.dataplane import DataPlane
from ..core.errors import InvalidArgument, NotFound, TooLarge
from ..core.image import FIELD
from ..core.image.service import MAX_IMAGES
from ..core.routes import Verdict
from ..core.shared_memory import is_local_client
from .codec import HEADER_LENGTH, decode_infer_request, encode_infer_response, json_object
from .encode import (
    image_response_json,
    model_config_json,
    model_metadata_json,
    model_statistics_json,
    region_status_json,
    repository_index_json,
    server_metadata_json,
)

T = TypeVar("T")

#: The Content-Types of a body that is one image.
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png")

#: The canary actions of ``POST /v2/routes/{name}/{action}``.
_ACTIONS = {v.value: v for v in (Verdict.PROMOTE, Verdict.ROLLBACK, Verdict.PAUSE, Verdict.RESUME)}

#: Responses of inference larger than this are compressed when the client accepts it.
COMPRESS_OVER_BYTES = 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed per Content-Encoding; TooLarge past ``limit`` bytes either way."""
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > limit):
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


def compress(body: bytes, accept: str) -> tuple[bytes, str | None]:
    """The body compressed as ``Accept-Encoding`` allows (gzip first), and the encoding; None: left as is."""
    accept = accept.lower()
    if "gzip" in accept:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in accept:
        return zlib.compress(body, 1), "deflate"
    return body, None


async def until_disconnect(request: Request, call: Awaitable[T]) -> T | None:
    """``call``'s result; None when the client disconnected first, which cancels it (a request that has not
    reached a batch yet is dropped)."""
    task = asyncio.ensure_future(call)
    watcher = asyncio.ensure_future(request.receive())

    def client_gone(_: asyncio.Future[Any]) -> None:
        task.cancel()

    watcher.add_done_callback(client_gone)
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done() and not watcher.cancelled():
            return None
        raise
    finally:
        watcher.remove_done_callback(client_gone)
        watcher.cancel()


async def read_images(request: Request, limit: int) -> list[bytes]:
    """The encoded images of an image request: the body itself (``image/jpeg``, ``image/png``) or the ``image``
    fields of a ``multipart/form-data`` body, in order. The whole body is held to ``limit`` bytes (413)."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in IMAGE_MEDIA_TYPES and media != "multipart/form-data":
        raise InvalidArgument(
            f"Content-Type '{content_type[:64]}' is not accepted for '{FIELD}': send image/jpeg, image/png or "
            f"multipart/form-data with '{FIELD}' fields"
        )
    try:
        body = await read_body(request, limit)
    except TooLarge as exc:
        raise TooLarge(f"'{FIELD}': {exc.message}") from None
    if media != "multipart/form-data":
        return [body]

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=MAX_IMAGES, max_fields=MAX_IMAGES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidArgument(f"multipart/form-data body is unreadable: {exc.message}") from None
    try:
        images = []
        for value in form.getlist(FIELD):
            if isinstance(value, str):
                raise InvalidArgument(f"'{FIELD}' must be a file part (with a filename), not a text field")
            images.append(await value.read())
    finally:
        await form.close()
    if not images:
        raise InvalidArgument(f"multipart/form-data body has no '{FIELD}' field")
    return images


def local_client(request: HTTPConnection) -> bool:
    return is_local_client(request.client.host if request.client else None)


class Endpoints:
    """The REST handlers over one data plane; bodies over ``max_request_bytes`` are refused with 413."""

    def __init__(self, dataplane: DataPlane, max_request_bytes: int) -> None:
        self._dp = self.dataplane = dataplane
        self._max_request_bytes = max_request_bytes

    # -- health, as every seed has it ------------------------------------------------------------

    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    async def ready(self) -> Response:
        if self._dp.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    async def metrics(self) -> Response:
        await self._dp.refresh_metrics()
        return Response(generate_latest(self._dp.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- server ----------------------------------------------------------------------------------

    async def server_metadata(self) -> dict[str, Any]:
        return server_metadata_json(self._dp.server_metadata())

    async def server_live(self) -> Response:
        return Response(status_code=200 if self._dp.live() else 400)

    async def server_ready(self) -> Response:
        return Response(status_code=200 if self._dp.ready() else 400)

    # -- models ----------------------------------------------------------------------------------

    async def all_stats(self) -> dict[str, Any]:
        return model_statistics_json(self._dp.model_statistics())

    async def model_metadata(self, model: str, version: str = "") -> dict[str, Any]:
        return model_metadata_json(self._dp.model_metadata(model, version))

    async def model_ready(self, model: str, version: str = "") -> Response:
        return Response(status_code=200 if self._dp.model_ready(model, version) else 400)

    async def model_config(self, model: str, version: str = "") -> dict[str, Any]:
        return model_config_json(self._dp.model_config(model, version))

    async def model_stats(self, model: str, version: str = "") -> dict[str, Any]:
        return model_statistics_json(self._dp.model_statistics(model, version))

    async def infer_route(self, request: Request) -> Response:
        """``infer`` as a plain Starlette endpoint: path parameters read directly, no FastAPI dependency solving."""
        params = request.path_params
        return await self.infer(request, params["model"], params.get("version", ""))

    async def infer(self, request: Request, model: str, version: str = "") -> Response:
        body = await read_body(request, self._max_request_bytes)
        header = request.headers.get(HEADER_LENGTH)
        if header is not None and not (header.isascii() and header.isdigit() and len(header) <= 18):
            raise InvalidArgument(f"Inference-Header-Content-Length '{header[:32]}' is not a number")
        infer_request, binary_default = decode_infer_request(
            body, int(header) if header is not None else None, model, version
        )
        if infer_request.uses_shared_memory():
            infer_request.local_client = local_client(request)
        infer_request.headers = request.headers  # case-insensitive; a route's sticky key may be one
        infer_request.transport = "http"
        response = await until_disconnect(request, self._dp.infer(infer_request))
        if response is None:
            return Response(status_code=499)
        payload, header_length = encode_infer_response(response, infer_request, binary_default)
        headers = {}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = str(header_length)
        payload, encoding = (
            compress(payload, request.headers.get("accept-encoding", ""))
            if len(payload) > COMPRESS_OVER_BYTES
            else (payload, None)
        )
        if encoding:
            headers["Content-Encoding"] = encoding
        media = "application/octet-stream" if header_length is not None else "application/json"
        return Response(payload, headers=headers, media_type=media)

    async def infer_image_route(self, request: Request) -> Response:
        """``infer_image`` as a plain Starlette endpoint, like ``infer_route``."""
        params = request.path_params
        return await self.infer_image(request, params["model"], params.get("version", ""))

    async def infer_image(self, request: Request, model: str, version: str = "") -> Response:
        images = await read_images(request, self._max_request_bytes)
        response = await until_disconnect(
            request, self._dp.infer_images(model, version, images, request.headers, "http")
        )
        if response is None:
            return Response(status_code=499)
        return JSONResponse(image_response_json(response))

    # -- shared memory ---------------------------------------------------------------------------

    async def system_shared_memory_status(self, request: Request, name: str = "") -> JSONResponse:
        regions = self._dp.system_shared_memory_status(name, local_client(request))
        return JSONResponse(region_status_json(regions))

    async def system_shared_memory_register(self, name: str, request: Request) -> Response:
        doc = await self._json_body(request)
        key = doc.get("key")
        if key is None:
            raise InvalidArgument("Shared memory register request has no 'key' field")
        if not isinstance(key, str):
            raise InvalidArgument("'key' must be a string")
        sizes = []
        for field, default in (("offset", 0), ("byte_size", None)):
            value = doc.get(field, default)
            if value is None:
                raise InvalidArgument(f"Shared memory register request has no '{field}' field")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"'{field}' must be a non-negative integer")
            sizes.append(value)
        self._dp.register_system_shared_memory(name, key, sizes[0], sizes[1], local_client(request))
        return Response(status_code=200)

    async def system_shared_memory_unregister(self, request: Request, name: str = "") -> Response:
        await self._json_body(request)
        self._dp.unregister_system_shared_memory(name, local_client(request))
        return Response(status_code=200)

    async def cuda_shared_memory_status(self, name: str = "") -> JSONResponse:
        return JSONResponse(region_status_json(self._dp.cuda_shared_memory_status(name)))

    async def cuda_shared_memory_register(self, name: str) -> Response:
        self._dp.register_cuda_shared_memory(name)
        return Response(status_code=200)

    async def cuda_shared_memory_unregister(self, name: str = "") -> Response:
        return Response(status_code=200)  # nothing is ever registered

    # -- routes ----------------------------------------------------------------------------------

    async def routes(self) -> dict[str, Any]:
        return {"routes": self._dp.routes.reports()}

    async def route(self, name: str) -> dict[str, Any]:
        return self._dp.routes.report(name)

    async def route_declare(self, name: str, request: Request) -> dict[str, Any]:
        body = await read_body(request, self._max_request_bytes)
        return await self._dp.routes.declare(name, json_object(body))

    async def route_delete(self, name: str) -> Response:
        await self._dp.routes.delete(name)
        return Response(status_code=200)

    async def route_action(self, name: str, action: str) -> dict[str, Any]:
        verdict = _ACTIONS.get(action)
        if verdict is None:
            raise NotFound(f"unknown route action '{action[:32]}' (promote, rollback, pause, resume)")
        return await self._dp.routes.act(name, verdict)

    # -- repository ------------------------------------------------------------------------------

    async def _json_body(self, request: Request) -> dict[str, Any]:
        body = await read_body(request, self._max_request_bytes)
        return json_object(body) if body.strip() else {}

    async def repository_index(self, request: Request) -> Response:
        doc = await self._json_body(request)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument("'ready' must be a boolean")
        return JSONResponse(repository_index_json(self._dp.repository_index(ready)))

    async def repository_load(self, model: str, request: Request) -> Response:
        doc = await self._json_body(request)
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidArgument("'parameters' must be an object")
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise InvalidArgument("parameter 'config' must be a JSON string")
        await self._dp.load_model(model, config)
        return Response(status_code=200)

    async def model_instances(self, model: str, request: Request) -> Response:
        """``{"count": N}``: serve the model on N execution instances (in place where the backend can)."""
        doc = await self._json_body(request)
        count = doc.get("count")
        if not isinstance(count, int) or isinstance(count, bool):
            raise InvalidArgument(f"'count' must be a whole number of instances, got {json.dumps(count)[:40]}")
        in_place = await self._dp.set_instances(model, count)
        return JSONResponse({"model": model, "instances": count, "in_place": in_place})

    async def model_park(self, model: str, request: Request) -> Response:
        """Unload the model until its next request loads it again; 409 while it has requests in flight."""
        await self._json_body(request)
        await self._dp.park_model(model)
        return JSONResponse({"model": model, "parked": True})

    async def model_warmup(self, model: str, request: Request) -> Response:
        """``{"version": "2"}`` (optional): run the model's warm-up samples now, through the scheduler, timed."""
        doc = await self._json_body(request)
        version = doc.get("version", "")
        if not isinstance(version, str):
            raise InvalidArgument(f"'version' must be a string, got {json.dumps(version)[:40]}")
        report = await self._dp.warm_up(model, version)
        return JSONResponse(report.to_json())

    async def repository_unload(self, model: str, request: Request) -> Response:
        await self._json_body(request)
        await self._dp.unload_model(model)
        return Response(status_code=200)
