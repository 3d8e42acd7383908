"""Routes on the real server (issue 10, items 1 to 3), with the real tritonclient on both transports: A/B splits
and sticky keys, the canary that advances, rolls back by itself and answers the admin, shadow arms, the admin
API's errors, the metrics, and the routes file across a restart."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support import models
from tests.support.appliance import ServerProcess, running_server

X = np.array([[1.0, 2.0]], np.float32)
DEADLINE_S = 60


def _repo(root: Path) -> Path:
    """'add' versions 1 and 2 (y = x + v), 3 (always fails) and 4 (x + 4, some milliseconds slower); 'twin' (x + 1,
    as add:1); 'slow' (other tensors)."""
    models.write_arms(
        root,
        "add",
        {
            1: models.add_model(1.0),
            2: models.add_model(2.0),
            3: models.failing_add_model(),
            4: models.slow_add_model(4.0),
        },
    )
    models.write_arms(root, "twin", {1: models.add_model(1.0)})
    models.write_slow(root, "slow")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("routes")
    repo = _repo(root / "repo")
    flags = ("--model-control-mode", "explicit", "--load-model", "*", "--routes-file", str(root / "routes.json"))
    with running_server(repo, root / "server.log", *flags) as server:
        yield server


def _put(server: ServerProcess, name: str, doc: Any) -> httpx.Response:
    return httpx.put(f"{server.base}/v2/routes/{name}", json=doc, timeout=30)


def _declare(server: ServerProcess, name: str, doc: Any) -> dict[str, Any]:
    answer = _put(server, name, doc)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _get(server: ServerProcess, name: str) -> dict[str, Any]:
    answer = httpx.get(f"{server.base}/v2/routes/{name}")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _infer(client: Any, name: str, **kwargs: Any) -> tuple[float, str]:
    """What the serving arm added to the input, and the response's ``routed_to``."""
    module = grpcclient if isinstance(client, grpcclient.InferenceServerClient) else httpclient
    tensor = module.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(name, [tensor], **kwargs)
    response = result.get_response()
    if module is grpcclient:
        routed = response.parameters["routed_to"].string_param
    else:
        routed = response["parameters"]["routed_to"]
    return float(result.as_numpy("y")[0, 0] - X[0, 0]), routed


@contextlib.contextmanager
def _load(server: ServerProcess, name: str) -> Iterator[list[int]]:
    """Requests to ``name`` from one gRPC client in a thread for the ``with`` block: [succeeded, failed]."""
    counts = [0, 0]
    stop = threading.Event()

    def run() -> None:
        client = server.grpc()
        try:
            while not stop.is_set():
                try:
                    _infer(client, name)
                    counts[0] += 1
                except InferenceServerException:
                    counts[1] += 1
        finally:
            client.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE_S} s: {what}")


# -- A/B -------------------------------------------------------------------------------------------


def test_a_route_is_called_like_a_model_on_both_transports(server: ServerProcess) -> None:
    body = _declare(server, "ab", {"arms": [{"model": "add", "version": "1", "weight": 1}]})
    assert body["name"] == "ab" and body["arms"][0]["label"] == "add:1"
    http, grpc = server.http(), server.grpc()
    for client in (http, grpc):
        assert client.is_model_ready("ab")
        metadata = client.get_model_metadata("ab")
        name = metadata.name if client is grpc else metadata["name"]
        assert name == "ab"
        assert _infer(client, "ab") == (1.0, "add:1")
    listed = httpx.get(f"{server.base}/v2/routes").json()["routes"]
    assert "ab" in [r["name"] for r in listed]


def test_weights_split_2000_requests_within_statistical_bounds(server: ServerProcess) -> None:
    _declare(
        server,
        "split",
        {"arms": [{"model": "add", "version": "1", "weight": 80}, {"model": "add", "version": "2", "weight": 20}]},
    )
    client = server.grpc()
    served = Counter(_infer(client, "split") for _ in range(2000))
    assert set(served) == {(1.0, "add:1"), (2.0, "add:2")}  # routed_to names the arm that answered
    # 20% of 2,000: 400, standard deviation 17.9; five of them either way
    assert abs(served[(2.0, "add:2")] - 400) < 90, served
    arms = _get(server, "split")["arms"]
    assert [a["stats"]["requests"] for a in arms] == [served[(1.0, "add:1")], served[(2.0, "add:2")]]
    assert arms[1]["stats"]["latency_seconds"]["buckets"][-1] == ["+Inf", arms[1]["stats"]["requests"]]
    metrics = httpx.get(f"{server.base}/metrics").text
    assert f'appliance_route_requests_total{{arm="add:2",route="split"}} {served[(2.0, "add:2")]}.0' in metrics
    assert 'appliance_route_weight{arm="add:1",route="split"} 80.0' in metrics
    assert 'appliance_route_request_duration_seconds_count{arm="add:1",route="split"}' in metrics


def test_sticky_keys_never_change_arm_while_weights_hold(server: ServerProcess) -> None:
    arms = [{"model": "add", "version": "1", "weight": 50}, {"model": "add", "version": "2", "weight": 50}]
    _declare(server, "sticky", {"arms": arms, "sticky": "X-User-Id"})
    http, grpc = server.http(), server.grpc()
    first: dict[str, float] = {}
    for user in (f"user-{i}" for i in range(60)):
        seen = {
            _infer(http, "sticky", headers={"X-User-Id": user})[0],
            _infer(grpc, "sticky", headers={"x-user-id": user})[0],
            _infer(grpc, "sticky", parameters={"x-user-id": user})[0],
            _infer(http, "sticky", parameters={"x-user-id": user})[0],
        }
        assert len(seen) == 1, (user, seen)  # header, metadata or parameter: one user, one arm
        first[user] = seen.pop()
    assert set(first.values()) == {1.0, 2.0}  # both arms have users
    # The second arm grows: its users stay, others move only toward it
    _declare(server, "sticky", {"arms": [{**arms[0], "weight": 20}, {**arms[1], "weight": 80}], "sticky": "x-user-id"})
    for user, before in first.items():
        now = _infer(grpc, "sticky", headers={"x-user-id": user})[0]
        assert before == 1.0 or now == 2.0, user


# -- the canary ------------------------------------------------------------------------------------


def _canary(name: str, version: str, **policy: Any) -> dict[str, Any]:
    return {
        "arms": [{"model": "add", "version": "1", "weight": 100}, {"model": "add", "version": version, "weight": 0}],
        "canary": {"arm": 1, "steps": [20, 50, 100], "interval_s": 0.4, "min_requests": 15, **policy},
    }


def test_a_healthy_canary_advances_to_promotion(server: ServerProcess) -> None:
    body = _declare(server, "healthy", _canary("healthy", "2", max_p95_ratio=50))
    assert body["canary"]["status"] == "running" and body["canary"]["share"] == 20
    with _load(server, "healthy") as counts:
        _wait_for(lambda: _get(server, "healthy")["canary"]["status"] == "promoted", "the canary is promoted")
    assert counts[1] == 0
    route = _get(server, "healthy")
    assert [a["weight"] for a in route["arms"]] == [0, 100]
    decisions = [d for d in route["canary"]["decisions"] if d["decision"] != "wait"]
    assert [d["decision"] for d in decisions] == ["advance", "promote"]
    assert [d["step"] for d in decisions] == [50, 100]
    measured = decisions[0]["measured"]
    assert measured["canary"]["requests"] >= 15 and measured["reference"]["requests"] >= 15
    assert measured["canary"]["errors"] == 0 and measured["canary"]["p95_ms"] > 0
    assert decisions[0]["thresholds"] == {"min_requests": 15, "max_error_rate_delta": 0.01, "max_p95_ratio": 50.0}
    assert _infer(server.grpc(), "healthy") == (2.0, "add:2")
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'appliance_canary_decisions_total{decision="promote",route="healthy"} 1.0' in metrics
    assert 'appliance_canary_share{route="healthy"} 100.0' in metrics


def test_a_canary_with_a_baseline_is_compared_with_a_fresh_copy_of_the_stable_version(server: ServerProcess) -> None:
    doc = _canary("based", "2", max_p95_ratio=50, steps=[20, 40, 100], baseline=True, interval_s=0.6)
    body = _declare(server, "based", doc)
    httpx.post(f"{server.base}/v2/routes/based/pause").raise_for_status()  # the weights hold while we look
    assert [a["weight"] for a in body["arms"]] == [60, 20]
    assert (
        body["canary"]["baseline_arm"]["label"] == "add:1@baseline" and body["canary"]["baseline_arm"]["weight"] == 20
    )
    client = server.grpc()
    seen = Counter(_infer(client, "based") for _ in range(300))
    assert set(seen) == {(1.0, "add:1"), (2.0, "add:2"), (1.0, "add:1@baseline")}  # the copy answers as add:1
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'appliance_model_ready{model="add",version="1@based"} 1.0' in metrics
    assert 'appliance_route_weight{arm="add:1@baseline",route="based"} 20.0' in metrics
    httpx.post(f"{server.base}/v2/routes/based/resume").raise_for_status()
    with _load(server, "based") as counts:
        _wait_for(lambda: _get(server, "based")["canary"]["status"] == "promoted", "the canary is promoted")
    assert counts[1] == 0
    route = _get(server, "based")
    assert "baseline_arm" not in route["canary"] and [a["weight"] for a in route["arms"]] == [0, 100]
    advance = next(d for d in route["canary"]["decisions"] if d["decision"] == "advance")
    assert advance["measured"]["reference"]["requests"] >= 15  # the baseline's window
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'appliance_model_ready{model="add",version="1@based"} 0.0' in metrics  # unloaded once promoted


@pytest.mark.parametrize(("version", "words"), [("3", "max_error_rate_delta"), ("4", "max_p95_ratio")])
def test_a_failing_or_slow_canary_rolls_back_by_itself(server: ServerProcess, version: str, words: str) -> None:
    name = f"bad{version}"
    _declare(server, name, _canary(name, version, max_p95_ratio=1.5))
    with _load(server, name):
        _wait_for(lambda: _get(server, name)["canary"]["status"] == "rolled_back", "the canary is rolled back")
    route = _get(server, name)
    assert [a["weight"] for a in route["arms"]] == [100, 0]
    last = route["canary"]["decisions"][-1]
    assert last["decision"] == "rollback" and last["by"] == "analysis" and words in last["reason"]
    canary, reference = last["measured"]["canary"], last["measured"]["reference"]
    if version == "3":
        assert canary["error_rate"] == 1.0 and reference["error_rate"] == 0.0
    else:
        assert canary["errors"] == 0 and canary["p95_ms"] > 1.5 * reference["p95_ms"]
    # The arm's own count is the window's, plus at most the one request in flight when the decision was taken
    in_window = canary["errors"] if version == "3" else 0
    assert in_window <= route["arms"][1]["stats"]["errors"] <= in_window + 1
    client = server.grpc()
    assert {_infer(client, name) for _ in range(50)} == {(1.0, "add:1")}  # nothing goes to the canary now


def test_the_admin_pauses_resumes_promotes_and_rolls_back(server: ServerProcess) -> None:
    def act(action: str) -> httpx.Response:
        return httpx.post(f"{server.base}/v2/routes/manual/{action}")

    _declare(server, "manual", _canary("manual", "2", interval_s=3600))
    assert act("resume").status_code == 409
    assert act("pause").json()["canary"]["status"] == "paused"
    assert act("resume").json()["canary"]["status"] == "running"
    promoted = act("promote").json()
    assert promoted["canary"]["status"] == "promoted" and [a["weight"] for a in promoted["arms"]] == [0, 100]
    for action in ("promote", "rollback", "pause"):
        answer = act(action)
        assert answer.status_code == 409 and "no canary is running (it was promoted)" in answer.json()["error"]
    _declare(server, "manual", _canary("manual", "2", interval_s=3600))  # replaced: a new canary
    rolled = act("rollback").json()
    assert [a["weight"] for a in rolled["arms"]] == [100, 0]
    assert [d["by"] for d in rolled["canary"]["decisions"]] == ["admin"]
    answer = act("explode")
    assert answer.status_code == 404 and "unknown route action 'explode'" in answer.json()["error"]
    _declare(server, "plain", {"arms": [{"model": "add", "weight": 1}]})
    answer = httpx.post(f"{server.base}/v2/routes/plain/promote")
    assert answer.status_code == 409 and answer.json()["error"] == "route 'plain' has no canary"


def _names(server: ServerProcess) -> list[str]:
    return [r["name"] for r in httpx.get(f"{server.base}/v2/routes").json()["routes"]]


# -- shadows ---------------------------------------------------------------------------------------


def test_a_shadow_gets_copies_its_answers_never_reach_a_client(server: ServerProcess) -> None:
    doc = {
        "arms": [
            {"model": "add", "version": "1", "weight": 1},
            {"model": "add", "version": "2", "shadow": True},  # answers x + 2: differs
            {"model": "twin", "shadow": True},  # answers x + 1: the same
        ],
        "shadow_atol": 1e-6,
    }
    _declare(server, "shadowed", doc)
    http, grpc = server.http(), server.grpc()
    answers = {_infer(http if i % 2 else grpc, "shadowed") for i in range(100)}
    assert answers == {(1.0, "add:1")}

    def compared() -> list[int]:
        return [a["stats"].get("compared", 0) for a in _get(server, "shadowed")["arms"]]

    _wait_for(lambda: compared() == [0, 100, 100], "both shadows compared 100 answers")
    arms = _get(server, "shadowed")["arms"]
    assert [a["stats"]["differed"] for a in arms[1:]] == [100, 0]
    assert [a["stats"]["requests"] for a in arms] == [100, 100, 100]  # latency side by side: each has its own
    assert all(a["stats"]["latency_seconds"]["sum"] > 0 for a in arms)
    metrics = httpx.get(f"{server.base}/metrics").text
    assert 'appliance_shadow_differences_total{arm="add:2",route="shadowed"} 100.0' in metrics
    assert 'appliance_shadow_differences_total{arm="twin",route="shadowed"} 0.0' in metrics


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"arms": [{"model": "add", "weight": -5}]}, "arm 0 (model 'add'): 'weight' must be an integer"),
        ({"arms": [{"model": "add", "weight": 0}]}, "weights of the arms are all zero"),
        ({"arms": [{"model": "nope", "weight": 1}]}, "arm 0 (nope): Request for unknown model: 'nope' is not found"),
        ({"arms": [{"model": "add", "version": "9", "weight": 1}]}, "arm 0 (add:9): Request for unknown model"),
        (
            {"arms": [{"model": "add", "weight": 1}, {"model": "slow", "weight": 1}]},
            "arm 1 (slow) differs from arm 0 (add) in input 'n': the other arm has none",
        ),
        ({"arms": [{"model": "add", "weight": 1}], "canary": {"arm": 0}}, "canary: a canary needs a route with"),
        ({**_canary("x", "2"), "canary": {"arm": 1, "steps": [50, 10]}}, "canary.steps: must be increasing"),
        ({**_canary("x", "2"), "canary": {"arm": 1, "max_error_rate_delta": -1}}, "canary.max_error_rate_delta"),
    ],
)
def test_a_bad_declaration_is_a_400_naming_the_arm_or_field(server: ServerProcess, doc: Any, words: str) -> None:
    answer = _put(server, "refused", doc)
    assert answer.status_code == 400, answer.text
    assert words in answer.json()["error"]
    assert "refused" not in _names(server)


def test_malformed_bodies_and_unknown_routes(server: ServerProcess) -> None:
    answer = httpx.put(f"{server.base}/v2/routes/x", content=b"{not json")
    assert answer.status_code == 400
    answer = httpx.get(f"{server.base}/v2/routes/unknown")
    assert answer.status_code == 404 and answer.json()["error"] == "route 'unknown' is not declared"
    assert httpx.delete(f"{server.base}/v2/routes/unknown").status_code == 404
    assert httpx.post(f"{server.base}/v2/routes/unknown/pause").status_code == 404


def test_routes_and_models_never_share_a_name(server: ServerProcess) -> None:
    answer = _put(server, "add", {"arms": [{"model": "twin", "weight": 1}]})
    assert answer.status_code == 409
    assert answer.json()["error"] == "route 'add' has the name of model 'add' in the model repository"
    _declare(server, "later", {"arms": [{"model": "twin", "weight": 1}]})
    models.write_arms(Path(server.args[server.args.index("--routes-file") + 1]).parent / "repo", "later", {1: b""})
    for client, status in ((server.http(), "409"), (server.grpc(), "StatusCode.FAILED_PRECONDITION")):
        with pytest.raises(InferenceServerException) as info:
            client.load_model("later")
        assert info.value.status() == status
        assert "model 'later' has the name of route 'later'" in info.value.message()
    assert httpx.delete(f"{server.base}/v2/routes/later").status_code == 200
    assert "later" not in _names(server)


# -- the routes file -------------------------------------------------------------------------------


def test_routes_and_canary_state_survive_a_restart(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    routes_file = tmp_path / "state" / "routes.json"
    flags = ("--routes-file", str(routes_file))
    with running_server(repo, tmp_path / "first.log", *flags) as server:
        _declare(server, "kept", _canary("kept", "2", interval_s=3600))
        httpx.post(f"{server.base}/v2/routes/kept/pause").raise_for_status()
        _declare(server, "gone", {"arms": [{"model": "twin", "weight": 1}]})
        assert httpx.delete(f"{server.base}/v2/routes/gone").status_code == 200
        server.process.kill()  # no clean shutdown: what was accepted is on disk already
        server.process.wait()
    with running_server(repo, tmp_path / "second.log", *flags) as server:
        assert _names(server) == ["kept"]
        route = _get(server, "kept")
        assert route["canary"]["status"] == "paused" and [a["weight"] for a in route["arms"]] == [80, 20]
        assert [d["decision"] for d in route["canary"]["decisions"]] == ["pause"]
        assert _infer(server.grpc(), "kept", headers={})[1] in ("add:1", "add:2")


def test_a_corrupt_routes_file_starts_without_the_route_naming_file_and_line(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    routes_file = tmp_path / "routes.json"
    routes_file.write_text(
        '{\n  "routes": {\n    "good": {"arms": [{"model": "add", "weight": 1}]},\n'
        '    "bad": {"arms": [{"model": "add", "weight": -1}]}\n  }\n}\n'
    )
    with running_server(repo, tmp_path / "server.log", "--routes-file", str(routes_file)) as server:
        assert _names(server) == ["good"]
        assert f"routes file {routes_file} line 4: route 'bad': arm 0 (model 'add'): 'weight'" in server.log()
    routes_file.write_text('{"routes": {\n  "good": {"arms": [\n')
    with running_server(repo, tmp_path / "again.log", "--routes-file", str(routes_file)) as server:
        assert _names(server) == []
        assert f"routes file {routes_file} line 3: not valid JSON" in server.log()
        assert server.http().is_server_ready()


def test_a_routes_file_that_cannot_be_written_refuses_the_change(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    routes_file = tmp_path / "routes.json"
    with running_server(repo, tmp_path / "server.log", "--routes-file", str(routes_file)) as server:
        _declare(server, "kept", {"arms": [{"model": "add", "weight": 1}]})
        routes_file.rename(tmp_path / "kept.json")
        routes_file.mkdir()  # a folder where the file goes: every write fails (even for root)
        answer = _put(server, "new", {"arms": [{"model": "twin", "weight": 1}]})
        assert answer.status_code == 500
        assert answer.json()["error"].startswith(f"the routes cannot be kept in {routes_file}: ")
        assert httpx.delete(f"{server.base}/v2/routes/kept").status_code == 500
        assert _names(server) == ["kept"]  # neither change happened
        assert _infer(server.grpc(), "kept") == (4.0, "add:4")  # no version: the highest
        assert f"routes file {routes_file}: cannot be written" in server.log()


def test_in_poll_mode_a_model_folder_with_a_route_name_is_not_loaded(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    flags = ("--model-control-mode", "poll", "--repository-poll-secs", "0.1")
    with running_server(repo, tmp_path / "server.log", *flags) as server:
        _declare(server, "fresh", {"arms": [{"model": "twin", "weight": 1}]})
        models.write_arms(repo, "fresh", {1: models.add_model(9.0)})
        _wait_for(lambda: "model 'fresh' is not loaded" in server.log(), "the poller logs the clash")
        assert "model 'fresh' is not loaded: model 'fresh' has the name of route 'fresh'" in server.log()
        assert _infer(server.grpc(), "fresh") == (1.0, "twin:1")
