"""OpenTelemetry tracing of inference requests: an optional extra (``pip install 'ml-inference-appliance[tracing]'``).

On only when the extra is installed and ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
is set: :func:`setup` then builds a tracer provider that exports over OTLP/HTTP in batches, and the server hands
the :class:`Tracing` to the data plane. Off, nothing here is called and OpenTelemetry is never imported: the data
plane's one ``tracer is None`` check is the whole cost.

Each request gets a SERVER span (``ModelInfer`` or ``ModelStreamInfer`` on gRPC, ``POST /v2/models/{model}/infer``
on REST), a child of
the W3C ``traceparent`` / ``tracestate`` of its REST headers or gRPC metadata (a new trace without them, or when
they are malformed). Its ``queue`` (enqueued to dispatched) and ``compute`` (the batch execution; its input,
infer and output phases as attributes) children are made after the request, from the times the core measured, so
no span object lives in the batcher. The standard ``OTEL_*`` variables apply (``OTEL_SERVICE_NAME``,
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_EXPORTER_OTLP_HEADERS``, ...).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from . import __version__
from .core.errors import InferenceError
from .core.types import InferRequest, InferResponse, TraceRecord

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
REST_SPAN = "POST /v2/models/{model}/infer"
#: InferRequest.transport -> the request span's name (the gRPC method; REST's route template)
SPAN_NAMES = {
    "http": REST_SPAN,
    "websocket": "/v2/models/{model}/infer/ws",
    "grpc": "ModelInfer",
    "grpc-stream": "ModelStreamInfer",
}


def installed() -> bool:
    """Whether the ``tracing`` extra is installed (found without importing it)."""
    try:
        return (
            importlib.util.find_spec("opentelemetry.sdk.trace") is not None
            and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http.trace_exporter") is not None
        )
    except ModuleNotFoundError:
        return False


def wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether an OTLP endpoint for traces is configured."""
    env = os.environ if environ is None else environ
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


class Tracing:
    """The tracer provider and what turns a request's measured times into spans."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import propagate, trace

        self._provider = provider
        self._tracer: Tracer = provider.get_tracer("appliance", __version__)
        self._extract = propagate.extract
        self._in_context = trace.set_span_in_context
        self._server = trace.SpanKind.SERVER
        self._internal = trace.SpanKind.INTERNAL
        self._error = trace.StatusCode.ERROR
        self._status = trace.Status

    async def infer(
        self, call: Callable[[InferRequest], Awaitable[InferResponse]], request: InferRequest
    ) -> InferResponse:
        """Run ``call(request)`` under a request span; add the core's measured times as child spans after it."""
        parent = self._extract(request.headers)  # traceparent / tracestate; an invalid one is ignored
        model, version = request.model_name, request.model_version
        name = SPAN_NAMES.get(request.transport, "infer")
        attributes: dict[str, str | int] = {"appliance.model.name": model}
        if version:
            attributes["appliance.model.requested_version"] = version
        if request.id:
            attributes["appliance.request.id"] = request.id
        if request.transport == "http":
            attributes.update({"http.request.method": "POST", "http.route": REST_SPAN})
        elif request.transport.startswith("grpc"):
            attributes.update({"rpc.system": "grpc", "rpc.service": "inference.GRPCInferenceService"})
            attributes["rpc.method"] = name
        record = request.trace = TraceRecord()
        wall_ns, mono, perf = time.time_ns(), time.monotonic(), time.perf_counter()
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=self._server,
            attributes=attributes,
            start_time=wall_ns,
        )
        try:
            response = await call(request)
        except InferenceError as exc:
            span.set_attribute("appliance.status", exc.status.value)
            span.set_status(self._status(self._error, exc.message))
            self._end(span, record, wall_ns, mono, perf)
            raise
        except asyncio.CancelledError:
            span.set_attribute("appliance.status", "cancelled")
            span.set_status(self._status(self._error, "cancelled"))
            self._end(span, record, wall_ns, mono, perf)
            raise
        except Exception as exc:
            span.record_exception(exc)
            span.set_attribute("appliance.status", "internal")
            span.set_status(self._status(self._error, f"{type(exc).__name__}: {exc}"))
            self._end(span, record, wall_ns, mono, perf)
            raise
        span.set_attribute("appliance.model.version", response.model_version)
        if response.model_name != model:
            span.set_attribute("appliance.model.served", response.model_name)
        routed = response.parameters.get("routed_to")
        if routed is not None:
            span.set_attribute("appliance.route.arm", str(routed))
        self._end(span, record, wall_ns, mono, perf)
        return response

    def _end(self, span: Span, record: TraceRecord, wall_ns: int, mono: float, perf: float) -> None:
        """The children of ``span`` from ``record`` (times converted from the core's clocks), then its end."""
        end_ns = time.time_ns()
        if span.is_recording():
            context = self._in_context(span)
            if record.dispatched:
                self._child(
                    "queue",
                    context,
                    wall_ns + int((record.enqueued - mono) * 1e9),
                    wall_ns + int((record.dispatched - mono) * 1e9),
                )
            execution = record.execution
            if execution is not None:
                span.set_attribute("appliance.batch.size", execution.batch_size)
                if execution.end:
                    # One span for the batch, its phases as attributes: each SDK span costs tens of microseconds
                    done = wall_ns + int((execution.end - perf) * 1e9)
                    compute_s = execution.input_s + execution.infer_s + execution.output_s
                    self._child(
                        "compute",
                        context,
                        done - int(compute_s * 1e9),
                        done,
                        {
                            "appliance.batch.size": execution.batch_size,
                            "appliance.batch.requests": execution.requests,
                            "appliance.compute.input_us": round(execution.input_s * 1e6, 1),
                            "appliance.compute.infer_us": round(execution.infer_s * 1e6, 1),
                            "appliance.compute.output_us": round(execution.output_s * 1e6, 1),
                        },
                    )
        span.end(end_time=max(end_ns, wall_ns))

    def _child(
        self, name: str, context: Context, start_ns: int, end_ns: int, attributes: Attributes | None = None
    ) -> None:
        span = self._tracer.start_span(
            name, context=context, kind=self._internal, start_time=start_ns, attributes=attributes
        )
        span.end(end_time=end_ns)

    def shutdown(self) -> None:
        """Export what is left and stop (blocking: call it from a thread)."""
        self._provider.shutdown()


def setup(exporter: SpanExporter | None = None) -> Tracing | None:
    """The request tracing, or None when off: the extra is not installed or no OTLP endpoint is set (an explicit
    ``exporter``, as the benchmark passes, turns it on regardless of the endpoint)."""
    if exporter is None and not wanted():
        return None
    if not installed():
        log.warning(
            "%s is set but the tracing extra is not installed (pip install 'ml-inference-appliance[tracing]'): "
            "no traces are exported",
            next(name for name in ENDPOINT_VARIABLES if os.environ.get(name, "").strip()),
        )
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout from the OTEL_EXPORTER_OTLP_* variables
    attributes: dict[str, str] = {SERVICE_VERSION: __version__}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if not named:
        attributes[SERVICE_NAME] = "appliance"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing on: spans exported over OTLP/HTTP")
    return Tracing(provider)
