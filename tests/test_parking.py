"""Parking a model (the autoscaler's memory lever): ``POST /v2/repository/models/{name}/park`` unloads it, its next
request loads it again and waits (bounded) instead of failing, concurrent requests share one load, a model with
requests in flight is never parked, and what each load took is exported for the autoscaler to weigh."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as httpclient

from tests.support.models import write_slow, write_versioned

VECTOR = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}]}


def _index(client: httpx.Client, name: str) -> dict[str, Any]:
    return next(e for e in client.post("/v2/repository/index", json={}).json() if e["name"] == name)


def _metric(client: httpx.Client, line_start: str) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.split()[-1])
    return None


def test_a_parked_model_loads_again_on_its_next_requests_which_wait_and_succeed(
    demo_repo: Path, server_factory: Any
) -> None:
    server = server_factory(demo_repo)
    with httpx.Client(base_url=server.base, timeout=60) as client:
        assert _metric(client, 'appliance_model_parked{model="mlp"}') == 0
        assert (_metric(client, 'appliance_model_load_duration_seconds{model="mlp"}') or 0) > 0
        assert _metric(client, 'appliance_model_memory_bytes{model="mlp"}') is not None
        response = client.post("/v2/repository/models/mlp/park")
        assert (response.status_code, response.json()) == (200, {"model": "mlp", "parked": True})
        entry = _index(client, "mlp")
        assert (entry["state"], entry["reason"]) == ("UNAVAILABLE", "parked: loads again on its next request")
        assert client.get("/v2/models/mlp/ready").status_code == 400
        assert _metric(client, 'appliance_model_parked{model="mlp"}') == 1
        metadata = client.get("/v2/models/mlp")  # not an inference: answered, not woken
        assert metadata.status_code == 503 and "parked: loads again on its next request" in metadata.json()["error"]

        # Eight requests at once, over both transports: all succeed, on one load.
        x = np.full((1, 64), 0.1, np.float32)

        def infer(i: int) -> tuple[int, ...]:
            if i % 2:
                import tritonclient.grpc as grpcclient

                g = grpcclient.InferInput("input", [1, 64], "FP32")
                g.set_data_from_numpy(x)
                return tuple(server.grpc().infer("mlp", [g]).as_numpy("logits").shape)
            h = httpclient.InferInput("input", [1, 64], "FP32")
            h.set_data_from_numpy(x)
            return tuple(server.http().infer("mlp", [h]).as_numpy("logits").shape)

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(infer, range(8))) == [(1, 10)] * 8
        assert _index(client, "mlp")["state"] == "READY"
        assert client.get("/v2/models/mlp/ready").status_code == 200
        assert _metric(client, 'appliance_model_parked{model="mlp"}') == 0
    assert server.log().count("model 'mlp' loaded") == 2  # at start, and once again for all eight


def test_a_model_with_requests_in_flight_is_never_parked(tmp_path: Path, server_factory: Any) -> None:
    repo = tmp_path / "repo"
    write_slow(repo, "slow", max_batch_size=1, dynamic_batching=None)
    server = server_factory(repo)
    inputs = [httpclient.InferInput("x", [1, 4], "FP32"), httpclient.InferInput("n", [1, 1], "INT64")]
    inputs[0].set_data_from_numpy(np.ones((1, 4), np.float32))
    # About 0.9 s of compute each on the development machine (200 was 90 ms: the running request could end
    # between the queue check and the park, and the park saw one request in flight, not two).
    inputs[1].set_data_from_numpy(np.full((1, 1), 2000, np.int64))

    def long_request(_: int) -> tuple[int, ...]:
        return tuple(server.http(network_timeout=120).infer("slow", inputs).as_numpy("y").shape)

    with ThreadPoolExecutor(2) as pool, httpx.Client(base_url=server.base, timeout=60) as client:
        held = pool.map(long_request, range(2))  # one instance: one runs, one waits in the queue
        deadline = time.monotonic() + 30
        while _metric(client, 'appliance_pending_requests{model="slow",version="1"}') != 1:
            assert time.monotonic() < deadline, "the second request never queued"
            time.sleep(0.005)
        response = client.post("/v2/repository/models/slow/park")
        assert (response.status_code, response.json()) == (
            409,
            {"error": "model 'slow' has 2 requests in flight: not parked"},
        )
        assert list(held) == [(1, 4), (1, 4)]
        assert _index(client, "slow")["state"] == "READY"


def test_a_load_that_outlasts_the_wait_answers_503_then_serves(demo_repo: Path, server_factory: Any) -> None:
    server = server_factory(demo_repo, "--park-wake-timeout-s", "0.001")
    with httpx.Client(base_url=server.base, timeout=60) as client:
        assert client.post("/v2/repository/models/cnn/park").status_code == 200
        image = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.5] * 12288}]}
        first = client.post("/v2/models/cnn/infer", json=image)
        assert first.status_code == 503
        assert first.json() == {
            "error": "model 'cnn' is loading again after it was parked and was not ready within 0.001 s"
        }
        deadline = time.monotonic() + 30
        while _index(client, "cnn")["state"] != "READY" and time.monotonic() < deadline:  # the load went on
            time.sleep(0.05)
        assert client.post("/v2/models/cnn/infer", json=image).status_code == 200


def test_a_route_whose_arm_is_parked_wakes_it(tmp_path: Path, server_factory: Any) -> None:
    repo = tmp_path / "repo"
    write_versioned(repo, "add", "{ all: { } }", versions=(1, 2))
    server = server_factory(repo)
    with httpx.Client(base_url=server.base, timeout=60) as client:
        arms = [{"model": "add", "version": "1", "weight": 50}, {"model": "add", "version": "2", "weight": 50}]
        assert client.put("/v2/routes/split", json={"arms": arms}).status_code == 200
        assert client.post("/v2/repository/models/add/park").status_code == 200
        x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
        answer = client.post("/v2/models/split/infer", json=x)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] in ([2, 3], [3, 4])
        # waking is not an arm's error (a canary's analysis would count it against the arm)
        assert [a["stats"]["errors"] for a in client.get("/v2/routes/split").json()["arms"]] == [0, 0]
        assert client.post("/v2/repository/models/split/park").json() == {
            "error": "'split' is a route: park the models of its arms"
        }


def test_bad_park_calls(demo_repo: Path, server_factory: Any) -> None:
    server = server_factory(demo_repo)
    with httpx.Client(base_url=server.base, timeout=60) as client:
        assert client.post("/v2/repository/models/nope/park").json() == {
            "error": "Request for unknown model: 'nope' is not found"
        }
        assert client.post("/v2/repository/models/mlp/park").status_code == 200
        again = client.post("/v2/repository/models/mlp/park")
        assert (again.status_code, again.json()) == (409, {"error": "model 'mlp' is parked already"})
        assert client.post("/v2/models/mlp/infer", json=VECTOR).status_code == 200
