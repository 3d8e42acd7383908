"""The autoscaler's memory lever against a real service: idle models are parked under memory pressure (a FAKE
Jetson's low available memory, or the loaded models over a budget), and every request for a parked model is
served (it loads again), so an appliance holds more models than fit at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.support.autoscaler import start_daemon, stop_daemon, wait_for
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson


def test_under_memory_pressure_idle_models_are_parked_and_a_request_loads_one_again(
    tmp_path: Path, demo_repo: Path, server_factory: Any
) -> None:
    """A FAKE AGX Orin whose shared memory is 3 % available: the daemon parks each idle model it may park, one a
    look, and a request for a parked model still succeeds (it loads again)."""
    device = write_fake_jetson(tmp_path / "FAKE-agx-orin", AGX_ORIN)
    (device / "proc/meminfo").write_text("MemTotal: 32000000 kB\nMemAvailable: 1000000 kB\nNvMapMemUsed: 0 kB\n")
    server = server_factory(demo_repo, "--device-telemetry", "true", "--device-root", str(device))
    config = f"""\
service_url = "{server.base}"
interval_s = 0.2
[memory]
min_available_ratio = 0.1
[models.mlp]
park_idle_after_s = 0.5
[models.cnn]
park_idle_after_s = 0.5
"""
    process, log = start_daemon(tmp_path, config, None)
    with httpx.Client(base_url=server.base, timeout=30) as client:

        def parked() -> set[str]:
            index = client.post("/v2/repository/index", json={}).json()
            return {e["name"] for e in index if e.get("reason", "").startswith("parked")}

        try:
            wait_for(lambda: parked() == {"mlp", "cnn"}, 30, "idle models not parked", log)
        finally:
            assert stop_daemon(process) == 0, log.read_text()
        decisions = [d for d in client.get("/v2/autoscaler/decisions").json()["decisions"] if d["action"] == "park"]
        assert sorted(d["model"] for d in decisions) == ["cnn", "mlp"] and decisions[0]["time"] < decisions[1]["time"]
        first = decisions[0]
        assert first["applied"] and first["desired"] == 0 and first["inputs"]["available_ratio"] == 0.0312
        assert first["reason"].startswith("available memory 3.1% below 10%: idle for ")
        assert first["inputs"]["load_seconds"] > 0 and first["inputs"]["idle_s"] >= 0.5
        vector = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}]}
        assert client.post("/v2/models/mlp/infer", json=vector).status_code == 200  # loads again, then answers
        assert parked() == {"cnn"}


def _heavy_model(seed: int) -> bytes:
    """``y = x`` over ``[B, 4]`` FP32 with a 2M-float (8 MB) weight the graph reads: a model whose memory is its
    weights, as most are."""
    weight = np.random.default_rng(seed).standard_normal(2_000_000).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["w"], ["s"], keepdims=0),
            helper.make_node("Mul", ["s", "zero"], ["z"]),
            helper.make_node("Add", ["x", "z"], ["y"]),
        ],
        "heavy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array(0, np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _held(client: httpx.Client) -> tuple[float, set[str]]:
    """What the loaded models hold by the service's estimates, and which are loaded."""
    memory: dict[str, float] = {}
    parked: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        for name, into in (("appliance_model_memory_bytes", memory), ("appliance_model_parked", parked)):
            if line.startswith(name + "{"):
                into[line.split('model="')[1].split('"')[0]] = float(line.split()[-1])
    loaded = {m for m, p in parked.items() if p == 0}
    return sum(memory.get(m, 0.0) for m in loaded), loaded


def test_more_models_than_the_budget_each_served_in_turn_none_failing(tmp_path: Path, server_factory: Any) -> None:
    """Five models of 8 MB weights, and a budget of what the two largest hold by the service's estimates: the idle
    ones are parked until the rest fit, then each model is asked for in turn (twice round): every request is
    answered, correctly, and after each turn the loaded models are back under the budget."""
    repo = tmp_path / "repo"
    names = [f"heavy{i}" for i in range(5)]
    for i, name in enumerate(names):
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.onnx").write_bytes(_heavy_model(i))
        (repo / name / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "onnxruntime"\nmax_batch_size: 8\n'
            'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
            'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        )
    server = server_factory(repo)
    with httpx.Client(base_url=server.base, timeout=60) as client:
        estimates = sorted(_estimates(client).values())
        assert len(estimates) == 5 and estimates[0] >= 8_000_000  # at least the weights
        budget = int(estimates[-1] + estimates[-2])
        models = "".join(f"[models.{name}]\npark_idle_after_s = 0.3\n" for name in names)
        config = f'service_url = "{server.base}"\ninterval_s = 0.15\n[memory]\nmodel_budget_bytes = {budget}\n{models}'
        process, log = start_daemon(tmp_path, config, None)
        answered, failures = 0, []
        try:
            wait_for(lambda: _held(client)[0] <= budget, 30, "the idle models were not parked under the budget", log)
            assert len(_held(client)[1]) < 5
            for turn in range(10):
                name = names[turn % 5]
                for i in range(15):
                    x = [float(turn), float(i), 1.0, 2.0]
                    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": x}]}
                    response = client.post(f"/v2/models/{name}/infer", json=body)
                    if response.status_code == 200 and response.json()["outputs"][0]["data"] == x:
                        answered += 1
                    else:
                        failures.append((name, response.status_code, response.text))
                wait_for(lambda: _held(client)[0] <= budget, 10, f"over the budget after {name}'s turn", log)
        finally:
            assert stop_daemon(process) == 0, log.read_text()
        decisions = client.get("/v2/autoscaler/decisions?limit=1000").json()["decisions"]
    parks = [d for d in decisions if d["action"] == "park"]
    assert failures == [] and answered == 150
    assert len(parks) >= 3
    assert all(d["applied"] and d["reason"].startswith("models hold ") for d in parks)
    assert f"over the budget of {budget / 1e6:.0f} MB" in parks[0]["reason"]


def _estimates(client: httpx.Client) -> dict[str, float]:
    out = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("appliance_model_memory_bytes{"):
            out[line.split('model="')[1].split('"')[0]] = float(line.split()[-1])
    return out
