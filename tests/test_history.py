"""The service's own history and timeline (``GET /v2/history``, ``GET /v2/events``): what the admin panel charts
and draws without a Prometheus. The sampler against real model statistics and a clock of the test's; then a
real server with a FAKE AGX Orin tree, whose loads, parks, canary rollback, autoscaler decision and throttling
all reach the timeline, and whose request rate and p99 reach the history."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.core.errors import Status
from appliance.core.events import EventLog
from appliance.core.history import DeviceFigures, History
from appliance.core.stats import Metrics, VersionStats
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson
from tests.support.models import write_versioned


def test_samples_give_rates_p99_and_device_changes_as_events() -> None:
    now = [1000.0]
    metrics, events = Metrics(), EventLog(clock=lambda: now[0])
    history = History(metrics, events, interval_s=10, keep_s=30, clock=lambda: now[0])
    cnn = VersionStats(metrics, "cnn", "1")
    history.sample(DeviceFigures(gpu_load=0.2, power_mode="30W"))  # the baseline: no point yet
    for _ in range(99):
        cnn.request_succeeded(0.004, 0.0)  # in the (0.0025, 0.005] bucket
    cnn.request_succeeded(0.2, 0.0)
    cnn.request_failed(Status.INTERNAL, 0.001)
    now[0] += 10
    history.sample(DeviceFigures(gpu_load=0.9, temperature_c=71.5, power_mode="30W", throttling=("gpu-thermal",)))
    doc = history.to_json()
    assert doc["time"] == [1010.0] and doc["interval_s"] == 10
    assert doc["models"]["cnn"]["request_rate"] == [10.0] and doc["models"]["cnn"]["error_rate"] == [0.1]
    assert doc["models"]["cnn"]["p99_ms"][0] == pytest.approx(5.0)  # rank 99 of 100: the top of its bucket
    assert doc["device"]["gpu_load"] == [0.9] and doc["device"]["temperature_c"] == [71.5]
    mlp = VersionStats(metrics, "mlp", "1")  # a model that comes later: no figures before it
    mlp.request_succeeded(0.001, 0.0)
    now[0] += 10
    history.sample(DeviceFigures(gpu_load=0.1, power_mode="MAXN"))
    doc = history.to_json()
    assert doc["models"]["mlp"]["request_rate"] == [None, 0.1]
    assert doc["models"]["cnn"]["request_rate"] == [10.0, 0.0] and doc["models"]["cnn"]["p99_ms"] == [
        pytest.approx(5.0),
        None,
    ]
    assert history.to_json("mlp", since=1015.0) == {
        "interval_s": 10,
        "time": [1020.0],
        "models": {"mlp": {"request_rate": [0.1], "error_rate": [0.0], "p99_ms": [pytest.approx(0.995)]}},
        "device": {
            "gpu_load": [0.1],
            "temperature_c": [None],
            "board_power_w": [None],
            "memory_used_bytes": [None],
            "power_mode": ["MAXN"],
        },
    }
    timeline = [(e["kind"], e["detail"]) for e in events.recent(10)]
    assert timeline == [
        ("throttling", "gpu-thermal is throttling"),
        ("throttling", "gpu-thermal no longer throttling"),
        ("power_mode", "power mode 30W -> MAXN"),
    ]
    for _ in range(5):  # 30 s kept at 10 s: three points
        now[0] += 10
        history.sample()
    assert len(history.to_json()["time"]) == 3


def test_the_timeline_and_history_of_a_real_server(tmp_path: Path, demo_repo: Path, server_factory: Any) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(demo_repo, repo)
    write_versioned(repo, "add", "{ all: { } }", versions=(1, 2))
    device = write_fake_jetson(tmp_path / "FAKE-agx-orin", AGX_ORIN)  # tj-thermal above its trip point
    flags = ("--device-telemetry", "true", "--device-root", str(device), "--history-interval-s", "0.2")
    server = server_factory(repo, *flags)
    vector = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}]}
    with httpx.Client(base_url=server.base, timeout=30) as client:
        for _ in range(30):
            assert client.post("/v2/models/mlp/infer", json=vector).status_code == 200
        arms = [{"model": "add", "version": "1", "weight": 100}, {"model": "add", "version": "2", "weight": 0}]
        canary = {"arm": 1, "steps": [50, 100], "interval_s": 3600, "min_requests": 1}
        assert client.put("/v2/routes/canary", json={"arms": arms, "canary": canary}).status_code == 200
        assert client.post("/v2/routes/canary/rollback").status_code == 200
        assert client.post("/v2/repository/models/cnn/park").status_code == 200
        decision = {"time": time.time(), "model": "mlp", "action": "up", "current": 1, "desired": 2, "reason": "busy"}
        assert client.post("/v2/autoscaler/decisions", json={"decisions": [decision]}).status_code == 204

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mlp = client.get("/v2/history", params={"model": "mlp"}).json()
            if any(rate for rate in mlp["models"].get("mlp", {}).get("request_rate", []) if rate):
                break
            time.sleep(0.1)
        assert list(mlp["models"]) == ["mlp"] and len(mlp["time"]) >= 1
        assert max(r or 0 for r in mlp["models"]["mlp"]["request_rate"]) > 0
        assert any(p for p in mlp["models"]["mlp"]["p99_ms"] if p)
        assert set(mlp["device"]["gpu_load"]) == {0.452} and mlp["device"]["power_mode"][-1] == "MODE_50W"

        events = client.get("/v2/events").json()["events"]
        kinds = [(e["kind"], e["model"]) for e in events]
        for expected in [("load", "add"), ("load", "cnn"), ("load", "mlp"), ("throttling", ""), ("canary", "canary")]:
            assert expected in kinds, (expected, kinds)
        assert kinds.index(("load", "mlp")) < kinds.index(("canary", "canary")) < kinds.index(("park", "cnn"))
        assert kinds.index(("park", "cnn")) < kinds.index(("autoscaler", "mlp"))
        throttling = next(e for e in events if e["kind"] == "throttling")
        assert throttling["detail"] == "tj-thermal is throttling"
        rollback = next(e for e in events if e["kind"] == "canary")
        assert rollback["detail"].startswith("rollback (admin), now 0%") and rollback["data"]["decision"] == "rollback"
        assert next(e for e in events if e["kind"] == "autoscaler")["detail"] == "up 1 -> 2: busy"

        # one model's timeline: its events and the device's, not the others'
        mine = client.get("/v2/events", params={"model": "cnn"}).json()["events"]
        assert {e["model"] for e in mine} == {"cnn", ""} and [e["kind"] for e in mine if e["model"]] == ["load", "park"]
        later = client.get("/v2/events", params={"since": str(events[-1]["time"])}).json()["events"]
        assert later == []
        bad = client.get("/v2/events", params={"since": "yesterday"})
        assert (bad.status_code, bad.json()) == (
            400,
            {"error": "'since' must be seconds since the epoch, got 'yesterday'"},
        )
        bad = client.get("/v2/history", params={"since": "-1"})
        assert bad.status_code == 400


def test_history_and_timeline_outlive_a_restart(tmp_path: Path, demo_repo: Path, server_factory: Any) -> None:
    """With --history-file, a stop (SIGTERM, as systemd stops the service for an update) saves the charts and the
    timeline, and the next start takes them back, with a gap where the service was down."""
    import signal

    saved = tmp_path / "state" / "history.json"
    flags = ("--history-interval-s", "0.2", "--history-file", str(saved))
    first = server_factory(demo_repo, *flags)
    vector = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}]}
    with httpx.Client(base_url=first.base, timeout=30) as client:
        for _ in range(20):
            assert client.post("/v2/models/mlp/infer", json=vector).status_code == 200
        assert client.post("/v2/repository/models/cnn/park").status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            before = client.get("/v2/history", params={"model": "mlp"}).json()
            if any(before["models"].get("mlp", {}).get("request_rate", [])):
                break
            time.sleep(0.1)
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(30) == 0
    assert "history: 0 points" not in first.log() and saved.is_file() and oct(saved.stat().st_mode)[-3:] == "600"

    second = server_factory(demo_repo, *flags)
    assert f"taken back from {saved}" in second.log()
    with httpx.Client(base_url=second.base, timeout=30) as client:
        after = client.get("/v2/history", params={"model": "mlp"}).json()
        events = client.get("/v2/events", params={"model": "cnn"}).json()["events"]
    n = len(before["time"])
    assert after["time"][:n] == before["time"]  # every earlier point (and those sampled before the stop)
    rates = after["models"]["mlp"]["request_rate"]
    assert rates[:n] == before["models"]["mlp"]["request_rate"] and max(r or 0 for r in rates) > 0
    assert None in rates[n:]  # the gap: the line breaks where the service was down
    kinds = [e["kind"] for e in events if e["model"] == "cnn"]
    assert kinds[:3] == ["load", "park", "load"]  # the first run's load and park, then this run's load


def test_a_damaged_history_file_is_reported_and_left_out(tmp_path: Path) -> None:
    from appliance.core.history import restore_history

    metrics, events = Metrics(), EventLog()
    history = History(metrics, events, interval_s=10, keep_s=60)
    path = tmp_path / "history.json"
    assert restore_history(path, history, events, 1000.0) == f"history: no {path} yet; the charts start empty"
    path.write_text('{"schema": 1,\n "history": ')
    said = restore_history(path, history, events, 1000.0)
    assert said.startswith(f"history: {path}:2: not valid JSON") and said.endswith("the charts start empty")
    path.write_text('{"schema": 1, "history": {"time": [990.0], "models": {}, "device": {}}, "events": []}')
    said = restore_history(path, history, events, 1000.0)
    assert said == f"history: {path}: damaged (KeyError: 'gpu_load'); the charts start empty"
    assert history.to_json()["time"] == []  # nothing half taken


def test_only_what_is_still_kept_comes_back() -> None:
    now = [1000.0]
    metrics, events = Metrics(), EventLog(clock=lambda: now[0])
    history = History(metrics, events, interval_s=10, keep_s=30, clock=lambda: now[0])
    cnn = VersionStats(metrics, "cnn", "1")
    history.sample()
    for _ in range(6):
        cnn.request_succeeded(0.004, 0.0)
        now[0] += 10
        history.sample()
    events.add("park", "cnn", "parked")
    doc, saved = history.to_json(), events.recent(10)
    assert doc["time"] == [1040.0, 1050.0, 1060.0]
    later = History(Metrics(), EventLog(), interval_s=10, keep_s=30)
    assert later.restore(doc, now=1075.0) == 1  # 1060 is within 20 s (two points and the gap) of 1075
    assert later.to_json()["time"] == [1060.0, 1070.0]
    assert later.to_json()["models"]["cnn"]["request_rate"] == [0.1, None]
    timeline = EventLog()
    timeline.add("load", "mlp", "loaded")
    assert timeline.restore(saved, now=1075.0) == 1 and [e["kind"] for e in timeline.recent(5)] == ["park", "load"]
    assert EventLog().restore(saved, now=900.0) == 0  # from the future (the clock went back): left out
