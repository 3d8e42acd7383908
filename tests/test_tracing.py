"""Tracing (the ``tracing`` extra): spans of real servers, sent by real tritonclients, exported over OTLP/HTTP to
a real receiver started here, which decodes them with OpenTelemetry's own protobuf messages."""

from __future__ import annotations

import gzip
import http.server
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytest.importorskip("opentelemetry.sdk.trace", reason="the tracing extra is not installed")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from appliance import tracing  # noqa: E402
from tests.support.appliance import ServerProcess, running_server  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


@dataclass
class ExportedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    status: int
    trace_state: str
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404)
                    return
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, message: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append(
                        ExportedSpan(
                            s.name,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            s.kind,
                            s.start_time_unix_nano,
                            s.end_time_unix_nano,
                            s.status.code,
                            s.trace_state,
                            {a.key: _value(a.value) for a in s.attributes},
                            resource,
                        )
                    )
        with self._lock:
            self.posts += 1
            self.spans.extend(spans)

    def wait_for(self, found: Callable[[list[ExportedSpan]], bool], timeout: float = 15) -> list[ExportedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spans = list(self.spans)
            if found(spans):
                return spans
            time.sleep(0.05)
        raise AssertionError(f"spans not exported in {timeout} s: {[(s.name, s.attributes) for s in spans]}")

    def request_trace(self, request_id: str) -> tuple[ExportedSpan, list[ExportedSpan]]:
        """The request span of ``request_id`` and every span of its trace, once its compute children are in."""

        def complete(spans: list[ExportedSpan]) -> bool:
            roots = [s for s in spans if s.attributes.get("appliance.request.id") == request_id]
            if not roots:
                return False
            if roots[0].status == ERROR:
                return True
            return len(_descendants(roots[0], spans)) >= 2

        spans = self.wait_for(complete)
        root = next(s for s in spans if s.attributes.get("appliance.request.id") == request_id)
        return root, _descendants(root, spans)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _descendants(root: ExportedSpan, spans: list[ExportedSpan]) -> list[ExportedSpan]:
    """The spans under ``root``: several requests share a trace (the test's traceparent)."""
    ids, tree = {root.span_id}, []
    while more := [s for s in spans if s.parent_id in ids and s.span_id not in ids]:
        ids.update(s.span_id for s in more)
        tree.extend(more)
    return tree


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _env(receiver: Receiver, delay_ms: int = 100) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": str(delay_ms)}


@pytest.fixture(scope="module")
def traced(receiver: Receiver, demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("traced")
    flags = ("--routes-file", str(root / "routes.json"))
    with running_server(demo_repo, root / "server.log", *flags, env=_env(receiver)) as server:
        yield server


def _inputs(module: Any, shape: tuple[int, ...] = (1, 64)) -> list[Any]:
    tensor = module.InferInput("input", list(shape), "FP32")
    tensor.set_data_from_numpy(np.ones(shape, np.float32))
    return [tensor]


def _traceparent(span_id: str = PARENT_ID, trace_id: str = TRACE_ID) -> str:
    return f"00-{trace_id}-{span_id}-01"


def _children(spans: list[ExportedSpan], parent: ExportedSpan) -> dict[str, ExportedSpan]:
    return {s.name: s for s in spans if s.parent_id == parent.span_id}


def _check_tree(root: ExportedSpan, spans: list[ExportedSpan]) -> None:
    """queue and compute under the request, inside it, one after the other; compute's phases as attributes."""
    children = _children(spans, root)
    assert set(children) == {"queue", "compute"}
    compute = children["compute"]
    assert compute.attributes["appliance.batch.size"] == 1
    assert compute.attributes["appliance.batch.requests"] == 1
    phases = [compute.attributes[f"appliance.compute.{p}_us"] for p in ("input", "infer", "output")]
    assert all(p >= 0 for p in phases) and phases[1] > 0
    assert len(spans) == 2
    for span in spans:
        assert root.start_ns <= span.start_ns <= span.end_ns <= root.end_ns, span.name
    assert children["queue"].end_ns <= compute.start_ns


def test_rest_request_continues_the_callers_trace(traced: ServerProcess, receiver: Receiver) -> None:
    parent = "1111111111111111"
    headers = {"traceparent": _traceparent(parent), "tracestate": "vendor=abc"}
    traced.http().infer("mlp", _inputs(httpclient), request_id="rest-1", headers=headers)
    root, spans = receiver.request_trace("rest-1")
    assert (root.name, root.kind) == ("POST /v2/models/{model}/infer", SERVER)
    assert (root.trace_id, root.parent_id) == (TRACE_ID, parent)
    assert root.trace_state == "vendor=abc"
    assert root.attributes["appliance.model.name"] == "mlp"
    assert root.attributes["appliance.model.version"] == "1"
    assert root.attributes["appliance.batch.size"] == 1
    assert root.attributes["http.request.method"] == "POST"
    assert root.resource["service.name"] == "appliance"
    _check_tree(root, spans)


def test_grpc_request_continues_the_callers_trace(traced: ServerProcess, receiver: Receiver) -> None:
    parent = "2222222222222222"
    traced.grpc().infer("mlp", _inputs(grpcclient), request_id="grpc-1", headers={"traceparent": _traceparent(parent)})
    root, spans = receiver.request_trace("grpc-1")
    assert (root.name, root.kind) == ("ModelInfer", SERVER)
    assert (root.trace_id, root.parent_id) == (TRACE_ID, parent)
    assert root.attributes["rpc.system"] == "grpc"
    _check_tree(root, spans)


def test_grpc_stream_requests_continue_the_streams_trace(traced: ServerProcess, receiver: Receiver) -> None:
    parent = "3333333333333333"
    client = traced.grpc()
    done = threading.Event()
    results: list[Any] = []

    def callback(result: Any, error: Any) -> None:
        results.append(error or result)
        done.set()

    client.start_stream(callback, headers={"traceparent": _traceparent(parent)})
    try:
        client.async_stream_infer("mlp", _inputs(grpcclient), request_id="stream-1")
        assert done.wait(30)
    finally:
        client.stop_stream()
    assert not isinstance(results[0], InferenceServerException), results[0]
    root, spans = receiver.request_trace("stream-1")
    assert (root.name, root.kind) == ("ModelStreamInfer", SERVER)
    assert (root.trace_id, root.parent_id) == (TRACE_ID, parent)
    _check_tree(root, spans)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_request_without_traceparent_starts_a_trace(
    traced: ServerProcess, receiver: Receiver, transport: str
) -> None:
    module = httpclient if transport == "http" else grpcclient
    client = traced.http() if transport == "http" else traced.grpc()
    client.infer("mlp", _inputs(module), request_id=f"new-{transport}")
    root, spans = receiver.request_trace(f"new-{transport}")
    assert root.parent_id == "" and root.trace_id != TRACE_ID
    _check_tree(root, spans)


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id: invalid
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id: invalid
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01",  # short trace id
    ],
)
def test_a_malformed_traceparent_is_ignored(
    traced: ServerProcess, receiver: Receiver, transport: str, header: str
) -> None:
    module = httpclient if transport == "http" else grpcclient
    client = traced.http() if transport == "http" else traced.grpc()
    request_id = f"bad-{transport}-{abs(hash(header))}"
    result = client.infer("mlp", _inputs(module), request_id=request_id, headers={"traceparent": header})
    assert result.as_numpy("logits").shape == (1, 10)
    root, spans = receiver.request_trace(request_id)
    assert root.parent_id == "" and root.trace_id not in (TRACE_ID, "0" * 32)
    _check_tree(root, spans)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_failed_request_has_error_status(traced: ServerProcess, receiver: Receiver, transport: str) -> None:
    module = httpclient if transport == "http" else grpcclient
    client = traced.http() if transport == "http" else traced.grpc()
    parent = "4444444444444444"
    with pytest.raises(InferenceServerException):
        client.infer(
            "mlp",
            _inputs(module, (1, 63)),
            request_id=f"err-{transport}",
            headers={"traceparent": _traceparent(parent)},
        )
    root, _ = receiver.request_trace(f"err-{transport}")
    assert (root.trace_id, root.parent_id) == (TRACE_ID, parent)
    assert root.status == ERROR
    assert root.attributes["appliance.status"] == "invalid_argument"


def test_a_routed_request_names_its_arm(traced: ServerProcess, receiver: Receiver) -> None:
    answer = httpx.put(f"{traced.base}/v2/routes/mlp_route", json={"arms": [{"model": "mlp", "weight": 1}]})
    assert answer.status_code == 200, answer.text
    traced.grpc().infer("mlp_route", _inputs(grpcclient), request_id="routed-1")
    root, spans = receiver.request_trace("routed-1")
    assert root.attributes["appliance.model.name"] == "mlp_route"
    assert root.attributes["appliance.model.served"] == "mlp"
    assert root.attributes["appliance.route.arm"] == "mlp:1"
    _check_tree(root, spans)


def test_buffered_spans_are_exported_at_exit(
    receiver: Receiver, demo_repo: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(demo_repo, env=_env(receiver, delay_ms=600_000))  # never exported on the schedule
    server.http().infer("mlp", _inputs(httpclient), request_id="at-exit")
    time.sleep(0.3)
    assert not [s for s in receiver.spans if s.attributes.get("appliance.request.id") == "at-exit"]
    assert server.stop() == 0
    receiver.request_trace("at-exit")


def test_no_endpoint_no_tracing(receiver: Receiver, demo_repo: Path, server_factory: Callable[..., Any]) -> None:
    posts = receiver.posts
    env = {name: "" for name in tracing.ENDPOINT_VARIABLES}
    server = server_factory(demo_repo, env=env)
    server.http().infer("mlp", _inputs(httpclient), headers={"traceparent": _traceparent()})
    server.grpc().infer("mlp", _inputs(grpcclient), headers={"traceparent": _traceparent()})
    assert server.stop() == 0
    assert "tracing on" not in server.log()
    assert receiver.posts == posts


def test_enabled_only_with_an_endpoint() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert tracing.installed()


def test_setup_is_off_without_an_endpoint_or_the_extra(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert tracing.setup() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(tracing, "installed", lambda: False)
    assert tracing.setup() is None
    assert "tracing extra is not installed" in caplog.text


_OFF_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, tempfile
    from pathlib import Path
    import numpy as np
    from appliance.core.types import InferRequest, InputTensor
    from appliance.demo import write_demo_repository
    from appliance.server import Appliance
    from appliance.settings import Settings

    def otel():
        return sorted(m for m in sys.modules if m.startswith("opentelemetry"))

    imported = otel()  # FastAPI itself imports the OpenTelemetry API (its own, native telemetry)

    async def main():
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            write_demo_repository(repo)
            settings = Settings(model_repository=repo, http_address="127.0.0.1", grpc_address="127.0.0.1",
                                http_port=0, grpc_port=0)
            appliance = Appliance(settings)
            await appliance.start()
            assert appliance.dataplane.tracer is None
            data = np.ones((1, 64), np.float32)
            request = InferRequest("mlp", inputs=[InputTensor("input", "FP32", (1, 64), data)],
                                   headers={"traceparent": sys.argv[1]}, transport="grpc")
            response = await appliance.dataplane.infer(request)
            assert response.outputs[0].shape == (1, 10) and request.trace is None
            appliance.request_stop()
            await appliance.wait_stopped()
        assert "appliance.tracing" in sys.modules
        print(sorted(set(otel()) - set(imported)))
        print(sorted(m for m in otel() if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))))

    asyncio.run(main())
    """
)


def test_off_never_imports_opentelemetry() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _OFF_SCRIPT, _traceparent()], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-2:] == ["[]", "[]"]  # nothing imported by serving; no SDK at all
