"""The Models page's two extras, through a real server: ``GET /v2/engines`` (each TensorRT engine's manifest,
checked against its files and this device: a FAKE AGX Orin tree, since this machine has no Jetson and no
TensorRT) and ``POST /v2/repository/models/NAME/warmup`` (the model's warm-up samples run now, timed, through
the scheduler like any request)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from appliance.optimize.device import DeviceInfo
from appliance.optimize.engines import EngineChecks
from tests.support.autoscaler import create_key
from tests.support.engines import fake_orin_root, write_engine

ORIN = DeviceInfo("10.3.0", "Orin (nvgpu)", "8.7", 2, "36.4.0", "NVIDIA Jetson AGX Orin Developer Kit")


def test_engines_are_checked_against_this_device(tmp_path: Path, demo_repo: Path, server_factory: Any) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(demo_repo, repo)
    write_engine(repo / "mlp" / "1")
    (repo / "mlp" / "config.pbtxt.tensorrt").write_text('platform: "tensorrt_plan"\n')  # fell back earlier
    write_engine(repo / "cnn" / "1", tensorrt="10.16.2")  # built for another TensorRT: rebuilt after boot
    (repo / "cnn" / ".rebuild-deferred").touch()
    (repo / "cnn" / "1" / "old.plan.json").write_text('{"tensorrt_version": "8.6"')
    keys = tmp_path / "keys.json"
    read = create_key(keys, "read")
    device = fake_orin_root(tmp_path / "FAKE-agx-orin")
    server = server_factory(repo, "--auth", "true", "--keys-file", str(keys), "--device-root", str(device))
    with httpx.Client(base_url=server.base, timeout=60, headers={"Authorization": f"Bearer {read}"}) as client:
        doc = client.get("/v2/engines").json()
        assert doc["device"] == {
            "tensorrt_version": "10.3.0",
            "gpu_name": "Orin (nvgpu)",
            "compute_capability": "8.7",
            "dla_cores": 2,
            "l4t_release": "36.4.0",
            "module": "NVIDIA Jetson AGX Orin Developer Kit",
            "error": "",
        }
        by_file = {e["manifest"]: e for e in doc["engines"]}
        assert list(by_file) == ["cnn/1/model.plan.json", "cnn/1/old.plan.json", "mlp/1/model.plan.json"]
        mlp = by_file["mlp/1/model.plan.json"]
        assert (mlp["matches"], mlp["differences"], mlp["serving"]) == (True, [], "onnxruntime-fallback")
        assert (mlp["precision"], mlp["tensorrt_version"], mlp["created"]) == ("fp16", "10.3.0", "2026-11-30T09:00:00Z")
        cnn = by_file["cnn/1/model.plan.json"]
        assert cnn["serving"] == "onnxruntime-deferred" and not cnn["matches"]
        assert cnn["differences"] == ["TensorRT version: manifest has 10.16.2, found 10.3.0"]
        old = by_file["cnn/1/old.plan.json"]
        assert not old["matches"] and "old.plan.json:1: manifest is not valid JSON" in old["error"]

        # an engine changed on disk is checked again, and no longer matches
        (repo / "mlp" / "1" / "model.plan").write_bytes(b"FAKE engine, truncated")
        mlp = next(e for e in client.get("/v2/engines").json()["engines"] if e["model"] == "mlp")
        assert not mlp["matches"] and mlp["differences"][0].startswith("sha256 of model.plan: manifest has ")
        assert httpx.get(f"{server.base}/v2/engines", timeout=30).status_code == 401


def test_an_unchanged_engine_is_not_hashed_again(tmp_path: Path) -> None:
    folder = tmp_path / "repo" / "m" / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"FAKE onnx")
    (folder.parent / "config.pbtxt").write_text('platform: "tensorrt_plan"\n')
    write_engine(folder)
    checks = EngineChecks(tmp_path / "repo", ORIN)
    (first,) = checks.states()
    assert first.matches and first.serving == "tensorrt"
    # same size and modification time: the remembered check stands (the plan is not read again)
    plan = folder / "model.plan"
    stamp = plan.stat()
    plan.write_bytes(b"FAKE serialized enginE")
    import os

    os.utime(plan, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert checks.states()[0] is first
    os.utime(plan, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
    assert not checks.states()[0].matches
    # a model whose engines are gone is forgotten
    shutil.rmtree(folder.parent)
    assert checks.states() == []


WARMUP = """\
model_warmup { name: "random" batch_size: 4 count: 3
  inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 64 ] random_data: true } } }
"""


def test_a_model_warmed_up_on_demand(tmp_path: Path, demo_repo: Path, server_factory: Any) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(demo_repo, repo)
    with (repo / "mlp" / "config.pbtxt").open("a") as f:
        f.write(WARMUP)
    keys, audit = tmp_path / "keys.json", tmp_path / "audit.jsonl"
    admin, read = create_key(keys, "admin"), create_key(keys, "read")
    server = server_factory(
        repo,
        "--auth",
        "true",
        "--keys-file",
        str(keys),
        "--audit-log-file",
        str(audit),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
    )
    as_admin = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=server.base, timeout=60, headers=as_admin) as client:

        def count(model: str) -> int:
            stats = client.get(f"/v2/models/{model}/stats").json()["model_stats"][0]
            return int(stats["inference_count"])

        before = count("mlp")
        done = client.post("/v2/repository/models/mlp/warmup")
        assert done.status_code == 200, done.text
        doc = done.json()
        assert doc["model"] == "mlp" and doc["version"] == "1"
        (sample,) = doc["samples"]
        assert (sample["name"], sample["runs"], sample["error"]) == ("random", 3, "")
        assert 0 < sample["mean_ms"] <= sample["max_ms"]
        assert count("mlp") - before == 3 * 4  # three batches of four, counted like any request
        # a model without model_warmup: one batch-1 request of zeros, as at load
        (zeros,) = client.post("/v2/repository/models/cnn/warmup", json={"version": "1"}).json()["samples"]
        assert (zeros["name"], zeros["runs"]) == ("zeros", 1)

        unknown = client.post("/v2/repository/models/nope/warmup")
        assert unknown.status_code == 404  # as the other model endpoints, with Triton's text
        assert unknown.json()["error"] == "Request for unknown model: 'nope' is not found"
        bad = client.post("/v2/repository/models/mlp/warmup", json={"version": 1})
        assert bad.status_code == 400 and bad.json()["error"] == "'version' must be a string, got 1"
        assert client.post("/v2/repository/models/mlp/unload").status_code == 200
        unloaded = client.post("/v2/repository/models/mlp/warmup")
        assert unloaded.status_code == 503
        assert (
            unloaded.json()["error"]
            == "Request for unknown model: 'mlp' has no available versions (UNAVAILABLE unloaded)"
        )
        refused = client.post("/v2/repository/models/cnn/warmup", headers={"Authorization": f"Bearer {read}"})
        assert refused.status_code == 403
    actions = [line for line in audit.read_text().splitlines() if '"model_warmup"' in line]
    assert len(actions) == 6 and '"target": "mlp"' in actions[0] and '"result": "ok"' in actions[0]
