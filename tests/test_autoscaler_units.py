"""The autoscaler's parts without a service: its configuration, the signals it reads from ``/metrics``, the
instance policy and its stabilisation (a swinging load must not flap), power mode stepping, and root's side of a
power mode request (with a FAKE nvpmodel: this machine is not a Jetson)."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import pytest

from appliance.core.autoscaler import AutoscalerDecisions, Decision
from appliance.core.errors import InvalidArgument
from appliance.scaling.config import ConfigError, ModelPolicy, PowerPolicy, check_models, load_config, parse_config
from appliance.scaling.policy import Stabiliser, recommend
from appliance.scaling.power import PowerStepper, apply_request
from appliance.scaling.signals import ModelLoad, loads, parse_scrape, quantile

TEMPLATE = (
    Path(__file__).resolve().parents[1] / "recipes-scaling" / "appliance-autoscaler" / "files" / "autoscaler.toml.in"
)


def test_the_shipped_configuration_loads(tmp_path: Path) -> None:
    text = TEMPLATE.read_text().replace("@SERVICE_URL@", "http://127.0.0.1:8000").replace("@DRY_RUN@", "false")
    assert "@" not in text
    (tmp_path / "autoscaler.toml").write_text(text)
    config = load_config(tmp_path / "autoscaler.toml")
    assert config.service_url == "http://127.0.0.1:8000" and not config.dry_run
    assert config.model_policies() == {} and not config.power.enabled and config.memory.min_available_ratio == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.cnn]\nmin_instances = 3\nmax_instances = 2\n", "models.cnn: min_instances 3 > max_instances 2"),
        ("[models.cnn]\ntarget_ongoing_requests = 0\n", "models.cnn.target_ongoing_requests: must be > 0, got 0"),
        ("[models.cnn]\ntarget_ongoing_requests = -1.5\n", "models.cnn.target_ongoing_requests: must be > 0"),
        ("[models.cnn]\nmax_instances = 2.5\n", "models.cnn.max_instances: must be a whole number, got 2.5"),
        ("[models.cnn]\nmin_instances = 0\n", "models.cnn.min_instances: must be >= 1"),
        ("[models.cnn]\nmax_instance = 4\n", "models.cnn.max_instance: unknown field"),
        ("[models.cnn]\nscale_up_delay_s = 'soon'\n", "models.cnn.scale_up_delay_s: must be a number, got 'soon'"),
        ("[defaults]\nmin_instances = 5\n", "defaults: min_instances 5 > max_instances 2"),
        ("interval_s = 0\n", "interval_s: must be > 0"),
        ("service_url = 'localhost:8000'\n", "service_url: must be an http:// or https:// address"),
        ("intervall_s = 5\n", "intervall_s: unknown setting"),
        ("[power]\nenabled = true\nmodes = [1]\n", "power.modes: stepping needs at least two modes"),
        ("[power]\nmodes = [1, 1]\n", "power.modes: mode numbers from 0 to 99, each once"),
        ("[power]\nup_gpu_load = 0.3\ndown_gpu_load = 0.5\n", "power: down_gpu_load 0.5 must be below up_gpu_load 0.3"),
        ("[memory]\nmin_available_ratio = 1.5\n", "memory.min_available_ratio: a share of the memory, below 1"),
        ("[memory]\nmin_free = 0.1\n", "memory.min_free: unknown field"),
        ("[memory]\nmodel_budget_bytes = 1.5e9\n", "memory.model_budget_bytes: must be a whole number"),
        ("[models.cnn]\npark_idle_after_s = -1\n", "models.cnn.park_idle_after_s: must be >= 0, got -1"),
        ("[models.cnn\n", "Expected ']'"),
    ],
)
def test_a_contradictory_file_is_refused_naming_the_model_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "autoscaler.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_defaults_apply_to_each_model_and_unknown_models_are_refused() -> None:
    config = parse_config(
        {
            "defaults": {"max_instances": 4, "target_ongoing_requests": 3},
            "models": {"a": {}, "b": {"max_instances": 6}},
        },
        "autoscaler.toml",
    )
    assert config.model_policies()["a"] == ModelPolicy(max_instances=4, target_ongoing_requests=3.0)
    assert config.model_policies()["b"].max_instances == 6 and config.model_policies()["b"].target_ongoing_requests == 3
    check_models(config, {"a", "b", "c"})
    with pytest.raises(ConfigError, match=r"autoscaler.toml: models.b: the service has no model 'b' \(it has: a\)"):
        check_models(config, {"a"})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}/none.toml: No such file"):
        load_config(tmp_path / "none.toml")


METRICS = """\
# TYPE appliance_request_duration_seconds histogram
appliance_request_duration_seconds_bucket{{model="m",version="1",le="0.01"}} {b1}
appliance_request_duration_seconds_bucket{{model="m",version="1",le="0.1"}} {b2}
appliance_request_duration_seconds_bucket{{model="m",version="1",le="+Inf"}} {b3}
appliance_request_duration_seconds_count{{model="m",version="1"}} {b3}
appliance_request_duration_seconds_sum{{model="m",version="1"}} {total}
# TYPE appliance_pending_requests gauge
appliance_pending_requests{{model="m",version="1"}} {pending}
# TYPE appliance_model_instances gauge
appliance_model_instances{{model="m",version="1"}} 2.0
# TYPE appliance_model_ready gauge
appliance_model_ready{{model="m",version="1"}} 1.0
# TYPE appliance_device_gpu_load_ratio gauge
appliance_device_gpu_load_ratio 0.5
# TYPE appliance_device_power_mode gauge
appliance_device_power_mode{{id="2",name="30W"}} 1.0
"""


def test_two_scrapes_give_in_flight_p95_and_rate() -> None:
    before = parse_scrape(METRICS.format(b1=10, b2=10, b3=10, total=0.05, pending=0), 100.0)
    # 100 more requests in 10 s, 80 of them in (0.01, 0.1], 20 under 0.01; 30 s of request time in all.
    after = parse_scrape(METRICS.format(b1=30, b2=110, b3=110, total=30.05, pending=1), 110.0)
    load = loads(before, after)["m"]
    assert load.ongoing == pytest.approx(3.0)  # 30 s of requests per 10 s: three in flight on average
    assert load.request_rate == pytest.approx(10.0)
    # rank 95 of 100: the (0.01, 0.1] bucket holds ranks 21..100, so 0.01 + 0.09 * 75 / 80
    assert load.p95_s == pytest.approx(0.01 + 0.09 * 75 / 80)
    assert (load.pending, load.instances, load.ready, load.gpu_load) == (1, 2, True, 0.5)
    assert after.power_mode == 2


def test_a_reset_counter_counts_from_zero_and_few_requests_give_no_p95() -> None:
    before = parse_scrape(METRICS.format(b1=500, b2=500, b3=500, total=50, pending=0), 0.0)
    after = parse_scrape(METRICS.format(b1=5, b2=5, b3=5, total=0.5, pending=0), 5.0)  # the model was reloaded
    load = loads(before, after)["m"]
    assert load.request_rate == pytest.approx(1.0) and load.ongoing == pytest.approx(0.1)
    assert load.p95_s is None  # 5 requests: too few to say


def test_quantile_is_prometheus_histogram_quantile() -> None:
    assert quantile(0.5, [(1.0, 0), (2.0, 10), (math.inf, 10)]) == pytest.approx(1.5)
    assert quantile(0.99, [(1.0, 0), (2.0, 5), (math.inf, 10)]) == 2.0  # in +Inf: the highest finite bound
    assert quantile(0.5, [(1.0, 0), (math.inf, 0)]) is None


def _load(ongoing: float, instances: int = 1, p95_ms: float | None = None, gpu: float | None = None) -> ModelLoad:
    return ModelLoad("m", ongoing, 0, instances, True, 10.0, None if p95_ms is None else p95_ms / 1000, gpu)


def test_recommendations() -> None:
    policy = ModelPolicy(min_instances=1, max_instances=4, target_ongoing_requests=2, p95_objective_ms=50)
    assert recommend(policy, _load(5.0)).desired == 3  # ceil(5 / 2)
    assert recommend(policy, _load(4.1, instances=2)).desired == 2  # within tolerance of 2 x 2
    assert recommend(policy, _load(0.0, instances=3)).desired == 1  # idle: min_instances
    held = recommend(policy, _load(20.0))
    assert (held.desired, held.at_max) == (4, True) and "held at max_instances 4" in held.reason
    slow = recommend(policy, _load(2.5, instances=2, p95_ms=80))  # within the target, but late and waiting
    assert slow.desired == 3 and "p95 80.0 ms over the objective 50 ms" in slow.reason
    busy = recommend(policy, _load(5.0, gpu=0.97))
    assert busy.desired == 1 and "GPU load 0.97 at its ceiling" in busy.reason


def test_a_swinging_load_follows_the_trend_not_the_swings() -> None:
    """A load that swings between 1 and 6 in flight every 5 s, for 20 minutes: the count rises once (the swings'
    peaks never last the 15 s up window) ... then the trend: a sustained rise scales up, a sustained fall down."""
    policy = ModelPolicy(min_instances=1, max_instances=4, target_ongoing_requests=2)
    stabiliser = Stabiliser(policy)
    current, changes = 1, []
    for step in range(240):  # a look every 5 s
        now = step * 5.0
        ongoing = 6.0 if (step // 1) % 2 else 1.0
        desired = stabiliser.decide(now, current, recommend(policy, _load(ongoing, current)).desired)
        if desired != current:
            changes.append((now, current, desired))
            current = desired
            stabiliser.forget()
    assert changes == []  # every 15 s window holds a low recommendation: no scale up; no scale down below 1
    for step in range(240, 250):  # then a sustained 6 in flight
        desired = stabiliser.decide(step * 5.0, current, recommend(policy, _load(6.0, current)).desired)
        if desired != current:
            changes.append((step * 5.0, current, desired))
            current = desired
            stabiliser.forget()
    assert changes == [(1210.0, 1, 3)]  # high since 1195 s: after 15 s of agreement, straight to ceil(6 / 2)
    for step in range(250, 400):  # a load swinging 0 and 6 at 3 instances: no scale down (the peaks need 3)
        ongoing = 6.0 if step % 2 else 0.0
        desired = stabiliser.decide(step * 5.0, current, recommend(policy, _load(ongoing, current)).desired)
        assert desired == current
    for step in range(400, 470):  # idle for good: down after the 300 s window
        desired = stabiliser.decide(step * 5.0, current, recommend(policy, _load(0.0, current)).desired)
        if desired != current:
            changes.append((step * 5.0, current, desired))
            current = desired
            stabiliser.forget()
    assert changes[1:] == [(2300.0, 3, 1)]


def test_power_steps_up_and_down_with_a_dead_band() -> None:
    stepper = PowerStepper(
        PowerPolicy(True, (1, 2, 0), up_gpu_load=0.8, down_gpu_load=0.3, up_after_s=60, down_after_s=300)
    )
    assert stepper.decide(0, 0.9, 1) is None
    assert stepper.decide(30, 0.5, 1) is None  # the dead band restarts the clock
    assert stepper.decide(40, 0.9, 1) is None
    assert stepper.decide(90, 0.95, 1) is None  # 50 s above: not yet
    step = stepper.decide(100, 0.95, 1)
    assert step is not None and (step.current, step.desired) == (1, 2)
    assert stepper.decide(110, 0.95, 2) is None  # a new window for the next step
    top = stepper.decide(170, 0.95, 0)
    assert top is not None and top.desired == 0 and top.at_max  # already at the top mode
    assert stepper.decide(200, 0.1, 0) is None
    down = stepper.decide(500, 0.1, 0)
    assert down is not None and (down.current, down.desired) == (0, 2)
    assert stepper.decide(600, 0.1, 7) is None  # a mode the file does not list: leave it alone
    assert stepper.decide(700, None, 2) is None  # no GPU load (not a Jetson): nothing to go on


def _fake_nvpmodel(tmp_path: Path, exit_status: int = 0) -> tuple[Path, Path]:
    """A FAKE nvpmodel: records its arguments (this machine has no nvpmodel)."""
    record = tmp_path / "fake_nvpmodel.args"
    script = tmp_path / "fake_nvpmodel"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\necho "NVPM: done"\nexit {exit_status}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


@pytest.mark.parametrize(
    ("config", "request_text", "status", "applied", "log"),
    [
        ("[power]\nenabled = true\nmodes = [1, 2]\n", "2\n", 0, "-m 2", "power mode 2 applied: NVPM: done"),
        ("[power]\nenabled = true\nmodes = [1, 2]\n", "0\n", 2, None, "mode 0 is not in"),
        ("[power]\nenabled = false\nmodes = [1, 2]\n", "2\n", 2, None, "[power] enabled is false"),
        ("[power]\nenabled = true\nmodes = [1, 2]\n", "2; reboot\n", 2, None, "expected a mode number"),
        ("[power]\nenabled = true\nmodes = [1, 2]\n", "1" * 40, 2, None, "expected a mode number"),
        ("[power]\nenabled = maybe\n", "2\n", 2, None, "autoscaler.toml"),
    ],
)
def test_root_applies_only_what_the_configuration_allows(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    config: str,
    request_text: str,
    status: int,
    applied: str | None,
    log: str,
) -> None:
    nvpmodel, record = _fake_nvpmodel(tmp_path)
    (tmp_path / "autoscaler.toml").write_text(config)
    (tmp_path / "power-mode").write_text(request_text)
    with caplog.at_level("INFO"):
        assert apply_request(tmp_path / "autoscaler.toml", tmp_path / "power-mode", nvpmodel) == status
    assert (record.read_text().strip() if record.exists() else None) == applied
    assert log in caplog.text


def test_a_failing_nvpmodel_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    nvpmodel, _ = _fake_nvpmodel(tmp_path, exit_status=3)
    (tmp_path / "autoscaler.toml").write_text("[power]\nenabled = true\nmodes = [1, 2]\n")
    (tmp_path / "power-mode").write_text("1\n")
    assert apply_request(tmp_path / "autoscaler.toml", tmp_path / "power-mode", nvpmodel) == 1
    assert "nvpmodel -m 1 failed (exit 3)" in caplog.text
    assert apply_request(tmp_path / "autoscaler.toml", tmp_path / "power-mode", tmp_path / "absent") == 1
    os.remove(tmp_path / "power-mode")
    assert apply_request(tmp_path / "autoscaler.toml", tmp_path / "power-mode", nvpmodel) == 2


GOOD = {"time": 1.5, "model": "m", "action": "up", "current": 1, "desired": 2, "reason": "busy", "inputs": {"a": 1}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"time": "now"}, "'d.time' must be a number"),
        ({"action": "sideways"}, "'d.action' must be one of up, down, hold, park, power_up, power_down"),
        ({"current": -1}, "'d.current' must be a whole number from 0"),
        ({"desired": True}, "'d.desired' must be a whole number from 0"),
        ({"reason": "x" * 600}, "'d.reason' must be a string of at most 512 characters"),
        ({"inputs": {"a": "b"}}, "'d.inputs.a' must be a number or null"),
        ({"inputs": [1]}, "'d.inputs' must be an object"),
        ({"at_max": 1}, "'d.at_max' must be true or false"),
        ({"colour": "red"}, "'d.colour' is not a field of a decision"),
    ],
)
def test_a_malformed_decision_names_its_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        Decision.from_json({**GOOD, **change}, "d")
    assert caught.value.message.startswith(message)


def test_the_record_keeps_the_newest_and_exports_metrics() -> None:
    record = AutoscalerDecisions(keep=3)
    for i in range(5):
        record.record(Decision.from_json({**GOOD, "time": float(i), "at_max": i == 4}))
    record.record(Decision.from_json({**GOOD, "model": "", "action": "power_up", "current": 1, "desired": 2}))
    assert [d["time"] for d in record.recent(10)] == [3.0, 4.0, 1.5]
    assert [d["time"] for d in record.recent(10, "m")] == [3.0, 4.0]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in record.collect() for s in m.samples}
    assert samples[("appliance_autoscaler_decisions_total", (("action", "up"), ("model", "m")))] == 5
    assert samples[("appliance_autoscaler_desired_instances", (("model", "m"),))] == 2
    assert samples[("appliance_autoscaler_at_max", (("model", "m"),))] == 1
    assert samples[("appliance_autoscaler_power_mode", ())] == 2
