"""Top-level endpoints: /health, /ready, /metrics (names, labels, values) and the OpenAPI docs."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.support.appliance import ServerProcess


def samples(server: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.base}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(all_samples, name: str, **labels: str) -> float:
    return all_samples[(name, tuple(sorted(labels.items())))]


def test_health_and_ready(demo_server: ServerProcess):
    assert httpx.get(f"{demo_server.base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{demo_server.base}/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert httpx.get(f"{demo_server.base}/v2/health/live").status_code == 200
    assert httpx.get(f"{demo_server.base}/v2/health/ready").status_code == 200


def test_docs_and_openapi(demo_server: ServerProcess):
    docs = httpx.get(f"{demo_server.base}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = httpx.get(f"{demo_server.base}/openapi.json").json()
    for path in ("/v2/models/{model}/infer", "/v2/health/ready", "/v2/repository/index", "/metrics", "/health"):
        assert path in spec["paths"], path


def test_metrics_count_what_happened(server_factory, demo_repo):
    server = server_factory(demo_repo)
    http, grpc_ = server.http(), server.grpc()
    for client, lib, batch in ((http, httpclient, 3), (grpc_, grpcclient, 2)):
        inp = lib.InferInput("input", [batch, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((batch, 64), np.float32))
        client.infer("mlp", [inp])
    bad = httpclient.InferInput("input", [1, 65], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 65), np.float32))
    with pytest.raises(InferenceServerException):
        http.infer("mlp", [bad])

    m = samples(server)
    mlp = {"model": "mlp", "version": "1"}
    assert value(m, "appliance_request_success_total", **mlp) == 2
    assert value(m, "appliance_request_failure_total", **mlp, reason="invalid_argument") == 1
    assert value(m, "appliance_inference_count_total", **mlp) == 5
    assert value(m, "appliance_execution_count_total", **mlp) == 2
    assert value(m, "appliance_queue_duration_seconds_count", **mlp) == 2
    assert value(m, "appliance_compute_duration_seconds_count", **mlp) == 2
    assert value(m, "appliance_compute_duration_seconds_sum", **mlp) > 0
    assert value(m, "appliance_request_duration_seconds_count", **mlp) == 2
    assert value(m, "appliance_request_duration_seconds_sum", **mlp) > 0
    assert value(m, "appliance_batch_size_count", **mlp) == 2
    assert value(m, "appliance_batch_size_sum", **mlp) == 5
    assert value(m, "appliance_batch_size_bucket", **mlp, le="2.0") == 1
    assert value(m, "appliance_batch_size_bucket", **mlp, le="4.0") == 2
    assert value(m, "appliance_pending_requests", **mlp) == 0
    assert value(m, "appliance_model_ready", **mlp) == 1
    assert value(m, "appliance_model_ready", model="cnn", version="1") == 1
    assert value(m, "appliance_inference_count_total", model="cnn", version="1") == 0
