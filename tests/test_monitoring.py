"""The monitoring bundle (recipes-monitoring/) names only metrics the service really exports: a real server with
every kind of series alive (models with a latency objective, the response cache, a canary and a shadow route,
device telemetry on a FAKE Jetson tree, autoscaler decisions) is scraped, and every ``appliance_*`` name in the
Grafana dashboards and the Prometheus rules must be among its series. The rules themselves are checked and unit
tested by ``promtool`` in scripts/check-layer.sh (tests/monitoring/)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cache import write_cache_repo
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson

FILES = Path(__file__).resolve().parents[1] / "recipes-monitoring" / "appliance-monitoring" / "files"
DASHBOARDS = sorted(FILES.glob("*.json"))
RULES = sorted(FILES.glob("*.rules.yml"))
NAME = re.compile(r"\b(appliance_[a-z0-9_]+)")


def _dashboard_queries(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    queries = [v["query"] for v in doc["templating"]["list"] if v.get("type") == "query"]
    for panel in doc["panels"]:
        queries += [t["expr"] for t in panel.get("targets", [])]
    return queries


def _rule_expressions(path: Path) -> list[str]:
    """Every ``expr:`` of a rules file: one line, or the indented block after ``expr: |``."""
    found = re.findall(r"expr: (?:\|\n((?:\s{10}.*\n)+)|(.*))", path.read_text())
    return [block or line for block, line in found]


def test_the_bundle_has_what_the_fleet_needs() -> None:
    assert [p.name for p in DASHBOARDS] == ["appliance-device.json", "appliance-serving.json"]
    alerts = re.findall(r"- alert: (\w+)", RULES[0].read_text())
    for wanted in (
        "ApplianceModelNotReady",  # model unavailable
        "ApplianceLatencyOverObjective",  # p99 over its objective
        "ApplianceQueueRejecting",  # queue saturated
        "ApplianceThermalThrottling",
        "ApplianceCanaryRolledBack",
        "ApplianceAutoscalerAtMax",
    ):
        assert wanted in alerts
    tested = (Path(__file__).parent / "monitoring" / "appliance-alerts.test.yml").read_text()
    assert all(f"alertname: {alert}" in tested for alert in alerts)  # each alert has a promtool unit test
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), path.name
        cells: set[tuple[int, int]] = set()
        for panel in doc["panels"]:  # no two panels overlap on the grid
            g = panel["gridPos"]
            mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & mine, (path.name, panel["title"])
            cells |= mine


def _scrape_everything(tmp_path: Path, demo_repo: Path, server_factory: Any) -> set[str]:
    repo = write_cache_repo(tmp_path / "repo", demo_repo)
    with (repo / "mlp" / "config.pbtxt").open("a") as f:
        f.write('\nparameters { key: "latency_objective_ms" value: { string_value: "50" } }\n')
    device = write_fake_jetson(tmp_path / "FAKE-agx-orin", AGX_ORIN)
    emc = device / "sys/kernel/debug/bpmp/debug/clk/emc/rate"  # debugfs, where the service may read it
    emc.parent.mkdir(parents=True)
    emc.write_text("3199000000\n")
    server = server_factory(
        repo,
        "--cache-config",
        "local,size=1048576",
        "--device-telemetry",
        "true",
        "--device-root",
        str(device),
    )
    with httpx.Client(base_url=server.base, timeout=30) as client:
        arms = [{"model": "add", "version": "1", "weight": 100}, {"model": "add", "version": "2", "weight": 0}]
        canary = {"arm": 1, "steps": [50, 100], "interval_s": 3600, "min_requests": 1}
        assert client.put("/v2/routes/canary", json={"arms": arms, "canary": canary}).status_code == 200
        shadowed = {"arms": [arms[0], {"model": "add", "version": "2", "shadow": True}], "shadow_atol": 1e-6}
        assert client.put("/v2/routes/shadowed", json=shadowed).status_code == 200
        x = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
        for route in ("canary", "shadowed"):
            for _ in range(5):
                assert client.post(f"/v2/models/{route}/infer", json=x).status_code == 200
        assert client.post("/v2/routes/canary/rollback").status_code == 200
        image = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.5] * 12288}]}
        for _ in range(2):  # a miss, then a hit
            assert client.post("/v2/models/cnn/infer", json=image).status_code == 200
        vector = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}]}
        assert client.post("/v2/models/mlp/infer", json=vector).status_code == 200
        bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 63], "data": [0.1] * 63}]}
        assert client.post("/v2/models/mlp/infer", json=bad).status_code == 400
        decision = {"time": time.time(), "model": "mlp", "action": "up", "current": 1, "desired": 2, "reason": "r"}
        power = {**decision, "model": "", "action": "power_up", "current": 1, "desired": 2}
        assert client.post("/v2/autoscaler/decisions", json={"decisions": [decision, power]}).status_code == 204
        text = client.get("/metrics").text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_a_dashboard_or_rule_names_is_exported(
    tmp_path: Path, demo_repo: Path, server_factory: Any
) -> None:
    exported = _scrape_everything(tmp_path, demo_repo, server_factory)
    named: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for query in _dashboard_queries(path):
            for name in NAME.findall(query):
                named.setdefault(name, set()).add(path.name)
    for path in RULES:
        for expression in _rule_expressions(path):
            for name in NAME.findall(expression):
                named.setdefault(name, set()).add(path.name)
    assert len(named) > 30  # the check reads the files it means to
    missing = {name: sorted(files) for name, files in named.items() if name not in exported}
    assert missing == {}, f"named in the bundle, not exported by the service: {missing}"


@pytest.mark.parametrize("value", ["fast", "0", "-5", "nan"])
def test_a_bad_latency_objective_is_a_load_error_naming_the_parameter(
    tmp_path: Path, demo_repo: Path, server_factory: Any, value: str
) -> None:
    repo = write_cache_repo(tmp_path / "repo", demo_repo)
    with (repo / "mlp" / "config.pbtxt").open("a") as f:
        f.write(f'\nparameters {{ key: "latency_objective_ms" value: {{ string_value: "{value}" }} }}\n')
    server = server_factory(repo)
    index = httpx.post(f"{server.base}/v2/repository/index", json={}, timeout=30).json()
    mlp = next(entry for entry in index if entry["name"] == "mlp")
    assert mlp["state"] == "UNAVAILABLE"
    assert f"parameter 'latency_objective_ms' must be milliseconds above 0, got '{value}'" in mlp["reason"]
