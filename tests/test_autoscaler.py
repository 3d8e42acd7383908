"""``appliance autoscale`` against a real service: the real daemon (its own process, as its systemd unit runs it)
scales a model up under a real client's load and back down when the load stops, with no failed request, through
the admin API only; every decision can be read at ``/v2/autoscaler/decisions`` and in ``/metrics``. It waits
out an unreachable service or a refused key without crashing, and refuses a file that names an unknown model."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.support.autoscaler import APPLIANCE, create_key, start_daemon, stop_daemon, wait_for
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson
from tests.support.models import write_slow


@pytest.fixture
def secured(tmp_path: Path, server_factory: Any) -> tuple[Any, str, str, Path]:
    repo = tmp_path / "repo"
    write_slow(repo, "slow", max_batch_size=1, dynamic_batching=None)
    keys_file, audit = tmp_path / "keys.json", tmp_path / "audit.jsonl"
    admin, read = create_key(keys_file, "admin"), create_key(keys_file, "read")
    server = server_factory(repo, "--auth", "true", "--keys-file", str(keys_file), "--audit-log-file", str(audit))
    return server, admin, read, audit


CONFIG = """\
service_url = "{url}"
interval_s = 0.25
[models.slow]
min_instances = 1
max_instances = 3
target_ongoing_requests = 1.0
scale_up_delay_s = 1.0
scale_down_delay_s = 2.0
"""


def test_the_daemon_scales_up_under_load_and_down_after_it_with_no_failed_request(
    tmp_path: Path, secured: tuple[Any, str, str, Path]
) -> None:
    server, admin, read, audit = secured
    as_admin = {"Authorization": f"Bearer {admin}"}
    stop = threading.Event()
    failures: list[str] = []
    done = [0]

    def load() -> None:
        client = httpclient.InferenceServerClient(server.http_url)
        inputs = [httpclient.InferInput("x", [1, 4], "FP32"), httpclient.InferInput("n", [1, 1], "INT64")]
        inputs[0].set_data_from_numpy(np.ones((1, 4), np.float32))
        inputs[1].set_data_from_numpy(np.full((1, 1), 4, np.int64))  # a few ms of compute per request
        while not stop.is_set():
            try:
                client.infer("slow", inputs, headers=as_admin)
                done[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                failures.append(repr(exc))
                time.sleep(0.1)

    process, log = start_daemon(tmp_path, CONFIG.format(url=server.base), admin)
    with httpx.Client(base_url=server.base, timeout=30, headers=as_admin) as client:

        def instances() -> int:
            groups = client.get("/v2/models/slow/config").json()["instance_group"]
            return sum(int(g.get("count", 1)) for g in groups)

        try:
            with ThreadPoolExecutor(6) as pool:
                workers = [pool.submit(load) for _ in range(6)]  # about six requests in flight
                try:
                    wait_for(lambda: instances() == 3, 60, "no scale up to max_instances 3", log)
                    wait_for(
                        lambda: any(d["at_max"] for d in client.get("/v2/autoscaler/decisions").json()["decisions"]),
                        30,
                        "no decision held at max",
                        log,
                    )
                finally:
                    stop.set()
                for worker in workers:
                    worker.result()
            wait_for(lambda: instances() == 1, 60, "no scale down to min_instances 1 once idle", log)
        finally:
            assert stop_daemon(process) == 0, log.read_text()
        assert failures == [] and done[0] > 100

        decisions = client.get("/v2/autoscaler/decisions", params={"model": "slow"}).json()["decisions"]
        changes = [(d["action"], d["current"], d["desired"], d["applied"]) for d in decisions if d["action"] != "hold"]
        assert changes[0][0] == "up" and changes[-1] == ("down", changes[-1][1], 1, True)
        assert all(applied for *_, applied in changes)
        up = next(d for d in decisions if d["action"] == "up")
        assert "every recommendation of the last 1 s agrees" in up["reason"]
        assert up["inputs"]["ongoing"] > 1 and up["inputs"]["target"] == 1.0 and not up["dry_run"]
        metrics = client.get("/metrics").text
        assert 'appliance_autoscaler_decisions_total{action="up",model="slow"}' in metrics
        assert 'appliance_autoscaler_desired_instances{model="slow"} 1.0' in metrics
        assert 'appliance_autoscaler_at_max{model="slow"} 0.0' in metrics
        # A read key sees the decisions and cannot report one.
        as_read = {"Authorization": f"Bearer {read}"}
        assert client.get("/v2/autoscaler/decisions", headers=as_read).status_code == 200
        assert client.post("/v2/autoscaler/decisions", json={"decisions": []}, headers=as_read).status_code == 403
    # Each change went through the audited admin API, under the admin key's name.
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert any(e["action"] == "model_instances" and e["target"] == "slow" and e["key"] == "admin" for e in entries)
    text = log.read_text()
    assert "slow up: 1 -> " in text and "slow down: " in text and '"ongoing"' in text


def test_a_dry_run_decides_and_changes_nothing(tmp_path: Path, secured: tuple[Any, str, str, Path]) -> None:
    server, admin, _, _ = secured
    as_admin = {"Authorization": f"Bearer {admin}"}
    config = CONFIG.format(url=server.base).replace("min_instances = 1", "min_instances = 2")  # wants 2 at once
    process, log = start_daemon(tmp_path, config, admin, "--dry-run")
    with httpx.Client(base_url=server.base, timeout=30, headers=as_admin) as client:
        try:
            wait_for(
                lambda: any(d["action"] == "up" for d in client.get("/v2/autoscaler/decisions").json()["decisions"]),
                30,
                "no dry-run decision",
                log,
            )
        finally:
            assert stop_daemon(process) == 0
        decision = next(d for d in client.get("/v2/autoscaler/decisions").json()["decisions"] if d["action"] == "up")
        assert (decision["current"], decision["desired"], decision["dry_run"], decision["applied"]) == (
            1,
            2,
            True,
            False,
        )
        assert "held at min_instances 2" in decision["reason"]
        assert client.get("/v2/models/slow/config").json()["instance_group"][0]["count"] == 1
    assert "(dry run)" in log.read_text()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"decisions": [{"time": 1}]}, "'decisions[0].action' must be a string of at most 512 characters"),
        ({"decisions": "up"}, "'decisions' must be a list of at most 100 decisions"),
        ([1, 2], "'decisions' must be a list of at most 100 decisions"),
    ],
)
def test_a_malformed_report_is_a_400_naming_the_field(
    secured: tuple[Any, str, str, Path], body: Any, message: str
) -> None:
    server, admin, _, _ = secured
    response = httpx.post(
        f"{server.base}/v2/autoscaler/decisions", json=body, headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    assert (response.status_code, response.json()) == (400, {"error": message})


def test_it_waits_out_a_service_that_is_away_or_refuses_itskey(
    tmp_path: Path, secured: tuple[Any, str, str, Path]
) -> None:
    server, _, read, _ = secured
    for url, key in (("http://127.0.0.1:9", None), (server.base, "not-a-key"), (server.base, read)):
        process, log = start_daemon(tmp_path, CONFIG.format(url=url).replace("0.25", "0.1"), key)
        try:
            wait_for(lambda log=log: log.read_text().count("next try in") >= 3, 30, f"no retries against {url}", log)
            assert process.poll() is None  # still running, backing off
        finally:
            assert stop_daemon(process) == 0
        text = log.read_text()
        assert "Traceback" not in text
        waits = [float(w) for w in re.findall(r"next try in ([\d.]+) s", text)]
        assert waits[:3] == [0.1, 0.2, 0.4]  # back-off, doubling up to a minute
        expected = "unreachable" if key is None else ("401" if key == "not-a-key" else "403")
        assert expected in text


def test_a_file_naming_a_model_the_service_lacks_is_refused(
    tmp_path: Path, secured: tuple[Any, str, str, Path]
) -> None:
    server, admin, _, _ = secured
    config = CONFIG.format(url=server.base) + "[models.nope]\nmax_instances = 2\n"
    process, log = start_daemon(tmp_path, config, admin)
    assert process.wait(30) == 2
    assert (
        f"{tmp_path / 'autoscaler.toml'}: models.nope: the service has no model 'nope' (it has: slow)"
        in log.read_text()
    )
    bad = CONFIG.format(url=server.base).replace("max_instances = 3", "max_instances = 0")
    process, log = start_daemon(tmp_path, bad, admin)
    assert process.wait(30) == 2
    assert "models.slow.max_instances: must be > 0, got 0" in log.read_text()


def test_under_sustained_gpu_load_it_asks_for_the_next_power_mode_and_root_applies_it(
    tmp_path: Path, demo_repo: Path, server_factory: Any
) -> None:
    """A FAKE AGX Orin at 45 % GPU load in mode 3 (50 W): above up_gpu_load for up_after_s, the daemon writes a
    request for the next mode up (0, MAXN); root's 'appliance power-mode' applies it with a FAKE nvpmodel."""
    device = write_fake_jetson(tmp_path / "FAKE-agx-orin", AGX_ORIN)
    server = server_factory(demo_repo, "--device-telemetry", "true", "--device-root", str(device))
    config = f"""\
service_url = "{server.base}"
interval_s = 0.2
[power]
enabled = true
modes = [1, 2, 3, 0]
up_gpu_load = 0.4
down_gpu_load = 0.1
up_after_s = 0.5
"""
    request = tmp_path / "run" / "power-mode"
    process, log = start_daemon(tmp_path, config, None, "--power-request-file", str(request))
    try:
        wait_for(request.exists, 30, "no power mode request", log)
    finally:
        assert stop_daemon(process) == 0, log.read_text()
    assert request.read_text() == "0\n"
    decisions = httpx.get(f"{server.base}/v2/autoscaler/decisions", timeout=30).json()["decisions"]
    power = [d for d in decisions if d["action"] == "power_up"]
    assert [(d["model"], d["current"], d["desired"], d["applied"]) for d in power] == [("", 3, 0, True)]
    assert power[0]["inputs"] == {"gpu_load": 0.452, "power_mode": 3}
    assert "GPU load above 0.4 for 0.5 s (0.45)" in power[0]["reason"]
    metrics = httpx.get(f"{server.base}/metrics", timeout=30).text
    assert "appliance_autoscaler_power_mode 0.0" in metrics

    fake_nvpmodel = tmp_path / "fake_nvpmodel"  # this machine has no nvpmodel
    fake_nvpmodel.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "fake_nvpmodel.args"}\n')
    fake_nvpmodel.chmod(0o755)
    applied = subprocess.run(
        [
            *APPLIANCE,
            "power-mode",
            "--config",
            str(tmp_path / "autoscaler.toml"),
            "--request",
            str(request),
            "--nvpmodel",
            str(fake_nvpmodel),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert applied.returncode == 0, applied.stderr
    assert (tmp_path / "fake_nvpmodel.args").read_text() == "-m 0\n"
    assert "power mode 0 applied" in applied.stderr
