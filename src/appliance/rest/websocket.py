"""REST: streaming inference over a WebSocket, ``/v2/models/{model}[/versions/{version}]/infer/ws``.

Each text message the client sends is the JSON body of a REST infer request (the KServe v2 protocol), with an
``id``; each message back is the REST infer response body, or ``{"id": ..., "error": ..., "status": ...}`` (the
HTTP status REST would have answered, and ``retry_after`` seconds when rate limited). Results go back as they
complete, out of order, so ``id`` is required. Requests are decoded and encoded by the REST codec and run through
:meth:`~appliance.core.dataplane.DataPlane.infer`, so routes, batching, the cache, statistics and metrics see
them as any other inference request.

A bad message (not JSON, not an infer body, no ``id``, a binary frame, over the key's rate limit) gets an error
message and the socket stays open. The model is resolved per message: an unknown model or version is answered
with Triton's text, as on REST, and a model loaded while the socket is open is served. With auth on the
handshake's ``Authorization`` header is checked for the ``infer`` operation (refused: the HTTP response REST would
give, 401/403/429, and no socket); each message after the first draws on the key's rate limit.

Flow control: at most ``websocket_max_in_flight`` requests of a socket are running or waiting to be sent; at the
bound the socket is not read until a result has gone out, so TCP holds a client back that sends faster than it
reads. Sends are awaited one at a time by the socket's writer. When the client goes away its pending requests
are cancelled (dropped if they have not reached a batch yet).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from ..core.auth.guard import Guard
from ..core.auth.roles import Operation, Principal
from ..core.dataplane import DataPlane
from ..core.errors import InferenceError, InternalError, InvalidArgument, RateLimited, Status, TooLarge
from .auth import peer, target
from .codec import decode_infer_document, encode_infer_response, json_object
from .endpoints import local_client

log = logging.getLogger(__name__)

#: The ``transport`` of a request that came on a WebSocket (tracing names its span after it).
TRANSPORT = "websocket"

MISSING_ID = (
    "request: missing 'id' (required on a WebSocket: results come back as they complete, each with its request's id)"
)
BINARY_OUTPUT = "binary_data outputs are not available on a WebSocket: its text messages hold JSON only"
BINARY_FRAME = "binary frames are not accepted: send each infer request as a text message holding its JSON body"


def error_message(request_id: str | None, exc: InferenceError, http_status: dict[Status, int]) -> str:
    """The message that answers a request with an error: its id (null when it could not be read), the text and
    the HTTP status REST would give, and ``retry_after`` (seconds) when rate limited."""
    doc: dict[str, Any] = {"id": request_id, "error": exc.message, "status": http_status[exc.status]}
    if isinstance(exc, RateLimited):
        doc["retry_after"] = exc.retry_after_s
    return json.dumps(doc, separators=(",", ":"))


class InferSocket:
    """The WebSocket endpoint of streaming inference over one data plane."""

    def __init__(
        self, dataplane: DataPlane, max_request_bytes: int, max_in_flight: int, http_status: dict[Status, int]
    ) -> None:
        self.dataplane = dataplane
        self.max_request_bytes = max_request_bytes
        self.max_in_flight = max_in_flight
        self.http_status = http_status

    async def serve(self, websocket: WebSocket) -> None:
        admitted, principal = await self._admit(websocket, self.dataplane.guard)
        if not admitted:
            return
        await websocket.accept()
        await _Session(self, websocket, principal).run()

    async def _admit(self, websocket: WebSocket, guard: Guard | None) -> tuple[bool, Principal | None]:
        """Whether the handshake is admitted, and its principal (None with auth off); a refused one is answered."""
        if guard is None:
            return True, None
        try:
            authorization = websocket.headers.get("authorization")
            return True, guard.admit(authorization, peer(websocket), Operation.INFER, target(websocket.path_params))
        except InferenceError as exc:
            if "websocket.http.response" not in websocket.scope.get("extensions", {}):
                await websocket.close(1008, exc.message[:120])
                return False, None
            response = JSONResponse({"error": exc.message}, status_code=self.http_status[exc.status])
            if exc.status is Status.UNAUTHENTICATED:
                response.headers["WWW-Authenticate"] = "Bearer"
            elif isinstance(exc, RateLimited):
                response.headers["Retry-After"] = str(exc.retry_after_s)
            await websocket.send_denial_response(response)
            return False, None


class _Session:
    """One open socket: a reader that starts a task per request, and a writer that sends their results."""

    def __init__(self, endpoint: InferSocket, websocket: WebSocket, principal: Principal | None) -> None:
        self._endpoint = endpoint
        self._ws = websocket
        self._principal = principal
        self._model = str(websocket.path_params["model"])
        self._version = str(websocket.path_params.get("version", ""))
        self._slots = asyncio.Semaphore(endpoint.max_in_flight)
        self._outbox: asyncio.Queue[str] = asyncio.Queue()  # at most max_in_flight: each holds a slot
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        reader = asyncio.ensure_future(self._read())
        writer = asyncio.ensure_future(self._write())
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Client gone (or this handler cancelled): nothing more can be sent, so drop what is pending.
            pending = {reader, writer, *self._tasks}
            for task in pending:
                task.cancel()
            results = await asyncio.gather(*pending, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, (WebSocketDisconnect, OSError)):
                    log.error("WebSocket session of '%s' failed", self._model, exc_info=result)

    async def _read(self) -> None:
        """Read a message whenever a slot is free; return when the client has closed the socket."""
        endpoint = self._endpoint
        first = True
        while True:
            await self._slots.acquire()  # at the bound: stop reading, TCP pushes back on the client
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            guard = endpoint.dataplane.guard
            limited = None
            if guard is not None and self._principal is not None and not first:
                limited = guard.charge(self._principal)
            first = False
            text = message.get("text")
            if text is None:
                self._answer_now(None, limited or InvalidArgument(BINARY_FRAME))
                continue
            task = asyncio.ensure_future(self._infer(text, limited))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self) -> None:
        """Send each result as it comes, awaiting the send; return when the client is gone."""
        while True:
            text = await self._outbox.get()
            try:
                await self._ws.send_text(text)
            except (WebSocketDisconnect, OSError):
                return
            self._slots.release()

    def _answer_now(self, request_id: str | None, exc: InferenceError) -> None:
        self._outbox.put_nowait(error_message(request_id, exc, self._endpoint.http_status))

    async def _infer(self, text: str, limited: RateLimited | None) -> None:
        request_id: str | None = None
        try:
            body = text.encode()
            if len(body) > self._endpoint.max_request_bytes:
                limit = self._endpoint.max_request_bytes
                raise TooLarge(f"request body of {len(body)} bytes exceeds the limit of {limit} bytes")
            doc = json_object(body)
            raw_id = doc.get("id")
            request_id = raw_id if isinstance(raw_id, str) else None
            if raw_id is None or raw_id == "":
                raise InvalidArgument(MISSING_ID)
            if limited is not None:
                raise limited
            request, binary_default = decode_infer_document(doc, memoryview(b""), self._model, self._version)
            if binary_default or any(o.binary for o in request.outputs):
                raise InvalidArgument(BINARY_OUTPUT)
            if request.uses_shared_memory():
                request.local_client = local_client(self._ws)
            request.headers = self._ws.headers
            request.transport = TRANSPORT
            response = await self._endpoint.dataplane.infer(request)
            payload, _ = encode_infer_response(response, request, False)
            self._outbox.put_nowait(payload.decode())
        except InferenceError as exc:
            self._answer_now(request_id, exc)
        except Exception:
            log.exception("WebSocket inference on '%s' failed", self._model)
            self._answer_now(request_id, InternalError("internal error"))
