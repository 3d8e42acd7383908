"""Routes in process: the declaration's checks, choosing arms (weights and sticky keys), the canary's judgement
and decisions, comparing shadow answers, and the routes file."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.core.errors import Conflict, InvalidArgument, NotFound
from appliance.core.model import ModelVersion
from appliance.core.routes import Route, Verdict, parse_route
from appliance.core.routes.canary import CanaryStatus, Decision, Window, WindowSummary, judge
from appliance.core.routes.route import differs
from appliance.core.routes.store import RoutesFileError, read_routes, write_routes
from appliance.core.types import InferRequest, InferResponse, OutputTensor

AB: dict[str, Any] = {
    "arms": [{"model": "m", "version": "1", "weight": 90}, {"model": "m", "version": "2", "weight": 10}]
}
CANARY: dict[str, Any] = {**AB, "canary": {"arm": 1, "steps": [10, 50, 100], "interval_s": 1, "min_requests": 10}}


async def _never(request: InferRequest, own_inputs: bool, served: ModelVersion | None) -> InferResponse:
    raise AssertionError("not called")


def _route(doc: Any, name: str = "r") -> Route:
    return Route(parse_route(name, doc), _never, clock=lambda: 1000.0)


# -- the declaration -------------------------------------------------------------------------------


def test_a_declaration_round_trips() -> None:
    doc = {**AB, "sticky": "X-User-Id", "shadow_atol": 0.5}
    doc["arms"] = [*AB["arms"], {"model": "n", "shadow": True}]
    spec = parse_route("r", doc)
    assert spec.sticky == "x-user-id"
    assert [a.label for a in spec.arms] == ["m:1", "m:2", "n"]
    assert spec.serving() == [0, 1]
    assert parse_route("r", spec.to_json()) == spec


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"arms": []}, "'arms' must be a non-empty list"),
        ({"arms": [{"model": "m", "weight": -1}]}, "arm 0 (model 'm'): 'weight' must be an integer"),
        ({"arms": [{"model": "m", "weight": 0}, {"model": "n", "weight": 0}]}, "weights of the arms are all zero"),
        ({"arms": [{"model": "m"}]}, "arm 0 (model 'm'): 'weight' is missing"),
        ({"arms": [{"model": "m", "weight": 1.5}]}, "'weight' must be an integer"),
        ({"arms": [{"model": "m", "weight": True}]}, "'weight' must be an integer"),
        ({"arms": [{"model": "m", "version": "x", "weight": 1}]}, "'version' must be a version number"),
        ({"arms": [{"model": "../m", "weight": 1}]}, "arm 0: 'model' must be a model name"),
        ({"arms": [{"model": "m", "weight": 1}, {"model": "m", "weight": 2}]}, "arm 1 (m) is declared twice"),
        ({"arms": [{"model": "m", "shadow": True}]}, "only shadow arms"),
        (
            {"arms": [{"model": "m", "weight": 1}, {"model": "n", "shadow": True, "weight": 5}]},
            "its 'weight' must be 0",
        ),
        ({"arms": [{"model": "m", "weight": 1, "colour": 1}]}, "arm 0: unknown field 'colour'"),
        ({**AB, "sticky": "bad header"}, "'sticky' must be a header"),
        ({**AB, "shadow_atol": -1}, "'shadow_atol' must be a non-negative number"),
        ({**AB, "extra": 1}, "unknown field 'extra'"),
        ({"arms": [{"model": "m", "weight": 1}], "canary": {"arm": 0}}, "at least two serving arms, this one has one"),
        ({**AB, "canary": {"arm": 2}}, "canary.arm: must be the index of a serving arm (0 or 1)"),
        ({**AB, "canary": {"arm": 1, "steps": [5, 5, 100]}}, "canary.steps: must be increasing, got [5, 5, 100]"),
        ({**AB, "canary": {"arm": 1, "steps": [50, 25]}}, "canary.steps: must be increasing"),
        ({**AB, "canary": {"arm": 1, "steps": [0, 100]}}, "canary.steps: must be a non-empty list of percentages"),
        ({**AB, "canary": {"arm": 1, "steps": [5, 101]}}, "canary.steps"),
        ({**AB, "canary": {"arm": 1, "interval_s": 0}}, "canary.interval_s: must be a number from 0.05 to 86400"),
        ({**AB, "canary": {"arm": 1, "min_requests": 0}}, "canary.min_requests: must be an integer from 1"),
        ({**AB, "canary": {"arm": 1, "max_error_rate_delta": 2}}, "canary.max_error_rate_delta: must be a number"),
        ({**AB, "canary": {"arm": 1, "max_p95_ratio": 0.5}}, "canary.max_p95_ratio: must be a number from 1 to"),
        ({**AB, "canary": {"arm": 1, "max_p95_ratio": float("nan")}}, "canary.max_p95_ratio"),
        (
            {**AB, "canary": {"arm": 1, "baseline": True, "steps": [10, 60, 100]}},
            "must be at most 50, got [10, 60, 100]",
        ),
        ({**AB, "canary": {"arm": 1, "baseline": 1}}, "canary.baseline: must be true or false"),
        ({**AB, "canary": {"arm": 1, "speed": 1}}, "canary: unknown field 'speed'"),
        ([1, 2], "the declaration must be a JSON object"),
    ],
)
def test_a_bad_declaration_names_the_field(doc: object, words: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_route("r", doc)
    assert words in caught.value.message
    assert caught.value.message.startswith("route 'r'")


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x" * 129, "-x", "sp ace"])
def test_a_bad_route_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="route name"):
        parse_route(name, AB)


# -- choosing arms ---------------------------------------------------------------------------------


def test_weights_split_the_traffic_within_statistical_bounds() -> None:
    route = _route(AB)
    counts = Counter(route.choose(None) for _ in range(20_000))
    # 10% of 20,000: 2,000 with a standard deviation of 42; five of them either way
    assert abs(counts[1] - 2000) < 5 * 42, counts
    assert set(counts) == {0, 1}


def test_an_arm_of_weight_zero_gets_nothing() -> None:
    route = _route({"arms": [{"model": "m", "weight": 0}, {"model": "n", "weight": 3}]})
    assert {route.choose(None) for _ in range(500)} == {1}
    assert {route.choose(f"user{i}") for i in range(500)} == {1}


def test_sticky_keys_keep_their_arm_and_follow_the_weights() -> None:
    route = _route(AB)
    users = [f"user-{i}" for i in range(4000)]
    first = {u: route.choose(u) for u in users}
    assert all(route.choose(u) == first[u] for u in users)  # the same arm every time while weights hold
    share = sum(1 for arm in first.values() if arm == 1) / len(users)
    assert 0.08 < share < 0.12, share  # weights hold for keys too (10%)
    # The canary grows to 50%: keys only move toward it, never away from it
    arms = [{**AB["arms"][0], "weight": 50}, {**AB["arms"][1], "weight": 50}]
    grown = Route(parse_route("r", {**AB, "arms": arms}), _never)
    after = {u: grown.choose(u) for u in users}
    assert all(after[u] == 1 for u in users if first[u] == 1)
    assert 0.45 < sum(1 for a in after.values() if a == 1) / len(users) < 0.55


def test_the_sticky_key_is_a_parameter_or_a_header() -> None:
    route = _route({**AB, "sticky": "X-User"})
    assert route.sticky_value(InferRequest("r", parameters={"x-user": 7})) == "7"
    assert route.sticky_value(InferRequest("r", headers={"x-user": "ann"})) == "ann"
    assert route.sticky_value(InferRequest("r")) is None
    assert _route(AB).sticky_value(InferRequest("r", headers={"x-user": "ann"})) is None


# -- the canary ------------------------------------------------------------------------------------


def _window(requests: int, errors: int, p95_ms: float) -> WindowSummary:
    return WindowSummary(requests, errors, p95_ms / 1000)


def test_judge_waits_for_enough_requests_on_both_sides() -> None:
    policy = parse_route("r", CANARY).canary
    assert policy is not None
    verdict, reason = judge(policy, _window(9, 0, 1), _window(500, 0, 1))
    assert verdict is Verdict.WAIT and "canary 9, reference 500, min_requests 10" in reason


def test_judge_rolls_back_on_errors_and_on_latency_with_the_numbers() -> None:
    policy = parse_route("r", CANARY).canary
    assert policy is not None
    verdict, reason = judge(policy, _window(100, 5, 1), _window(100, 1, 1))
    assert verdict is Verdict.ROLLBACK and "0.0500 against 0.0100: +0.0400 > max_error_rate_delta 0.01" in reason
    verdict, reason = judge(policy, _window(100, 0, 3), _window(100, 0, 2))
    assert verdict is Verdict.ROLLBACK and "3.000 ms against 2.000 ms: 1.500x > max_p95_ratio 1.2" in reason
    verdict, _ = judge(policy, _window(100, 1, 2.3), _window(100, 0, 2))
    assert verdict is Verdict.ADVANCE  # +0.01 errors and 1.15x: within


def test_a_healthy_canary_walks_the_steps_then_is_promoted() -> None:
    route = _route(CANARY)
    assert [a.weight for a in route.spec.arms] == [90, 10]  # the canary sets the weights at its first step
    for expected in ([50, 50], [0, 100]):
        for _ in range(20):
            route.arms[0].success(0.001)
            route.arms[1].success(0.001)
        decision = route.analyse()
        assert decision is not None
        assert [a.weight for a in route.spec.arms] == expected
    assert route.canary_status is CanaryStatus.PROMOTED
    assert [d.verdict for d in route.decisions] == [Verdict.ADVANCE, Verdict.PROMOTE]
    assert route.analyse() is None  # done
    measured = route.decisions[0].to_json()["measured"]
    assert measured["canary"] == {"requests": 20, "errors": 0, "error_rate": 0.0, "p95_ms": 1.0}


def test_a_failing_canary_is_rolled_back_and_waits_are_one_entry() -> None:
    route = _route(CANARY)
    route.arms[1].success(0.001)
    route.analyse()
    route.analyse()
    assert [d.verdict for d in route.decisions] == [Verdict.WAIT]
    for _ in range(20):
        route.arms[0].success(0.001)
        route.arms[1].error()
    decision = route.analyse()
    assert decision is not None and decision.verdict is Verdict.ROLLBACK
    assert decision.canary is not None and decision.canary.errors == 20 and decision.canary.requests == 21
    assert [a.weight for a in route.spec.arms] == [100, 0]
    assert route.canary_status is CanaryStatus.ROLLED_BACK


class _Copy:
    """Stands in for the baseline's ModelVersion: only its name and version are read in process."""

    name = "m"
    version = 1

    async def stop(self) -> None:
        self.stopped = True


def test_a_baseline_takes_the_canary_share_and_is_the_reference() -> None:
    route = _route({**CANARY, "canary": {**CANARY["canary"], "baseline": True, "steps": [10, 50, 100]}})
    copy = _Copy()
    route.attach_baseline(copy)  # type: ignore[arg-type]
    assert ([a.weight for a in route.spec.arms], route.baseline_weight) == ([80, 10], 10)
    assert Counter(route.choose(None) for _ in range(10_000))[2] in range(800, 1200)
    assert route.label(2) == "m:1@baseline"
    for _ in range(20):  # the canary is as fast as the baseline, and four times slower than the stable arm
        route.arms[0].success(0.001)
        route.arms[1].success(0.004)
        route.arms[2].success(0.004)
    decision = route.analyse()
    assert decision is not None and decision.verdict is Verdict.ADVANCE  # judged against the baseline
    assert ([a.weight for a in route.spec.arms], route.baseline_weight) == ([0, 50], 50)
    assert route.to_json()["canary"]["baseline_arm"]["weight"] == 50
    route.act(Verdict.ROLLBACK)
    assert not route.needs_baseline()
    asyncio.run(route.release_baseline())
    assert copy.stopped and route.baseline is None
    assert ([a.weight for a in route.spec.arms], route.baseline_weight) == ([100, 0], 0)


def test_admin_actions_and_their_conflicts() -> None:
    route = _route(CANARY)
    with pytest.raises(Conflict, match="not paused"):
        route.act(Verdict.RESUME)
    route.act(Verdict.PAUSE)
    assert route.analyse() is None  # paused: no analysis
    with pytest.raises(Conflict, match="already paused"):
        route.act(Verdict.PAUSE)
    route.act(Verdict.RESUME)
    route.act(Verdict.ROLLBACK)
    assert [a.weight for a in route.spec.arms] == [100, 0]
    for verdict in (Verdict.PROMOTE, Verdict.ROLLBACK, Verdict.PAUSE):
        with pytest.raises(Conflict, match="no canary is running"):
            route.act(verdict)
    with pytest.raises(Conflict, match="has no canary"):
        _route(AB).act(Verdict.PROMOTE)
    assert [d.by for d in route.decisions] == ["admin"] * 3


def test_the_canary_state_survives_its_json() -> None:
    route = _route(CANARY)
    for _ in range(20):
        route.arms[0].success(0.001)
        route.arms[1].success(0.001)
    route.analyse()
    state = json.loads(json.dumps(route.state_json()))
    again = Route(route.spec, _never)
    again.restore(state)
    assert again.canary_status is route.canary_status and again.canary_step == route.canary_step
    assert [d.to_json() for d in again.decisions] == [d.to_json() for d in route.decisions]
    assert [a.weight for a in again.spec.arms] == [50, 50]


def test_the_window_keeps_a_bounded_sample() -> None:
    window = Window()
    for i in range(50_000):
        window.success(i / 1000)
    summary = window.summary()
    assert summary.requests == 50_000 and len(window.latencies) == 20_000
    assert summary.p95_s is not None and 45 < summary.p95_s < 50  # the sample's p95 is near the true 47.5


def test_decisions_read_back() -> None:
    decision = Decision(5.0, Verdict.ROLLBACK, 0, "why", _window(10, 2, 1.5), _window(10, 0, 1.0), {"x": 1.0})
    assert Decision.from_json(decision.to_json()) == decision


# -- shadows ---------------------------------------------------------------------------------------


def _response(*values: float, datatype: str = "FP32") -> InferResponse:
    data = np.array(values, np.float32)
    return InferResponse("m", "1", "", [OutputTensor("y", datatype, data.shape, data)])


def test_differs_compares_within_the_tolerance() -> None:
    assert not differs(_response(1, 2), _response(1, 2), 0.0)
    assert differs(_response(1, 2), _response(1, 2.001), 0.0)
    assert not differs(_response(1, 2), _response(1, 2.001), 0.01)
    assert differs(_response(1, 2), _response(1, 2, 3), 1.0)  # shape
    assert differs(_response(1, 2), _response(1, 2, datatype="FP16"), 1.0)  # datatype
    assert not differs(_response(float("nan")), _response(float("nan")), 0.0)
    other = InferResponse("m", "1", "", [OutputTensor("z", "FP32", (1,), np.zeros(1, np.float32))])
    assert differs(_response(0), other, 1.0)


def test_shadow_copies_are_bounded_and_compared() -> None:
    async def run() -> Route:
        gate = asyncio.Event()

        async def call(request: InferRequest, own_inputs: bool, served: ModelVersion | None) -> InferResponse:
            if request.model_name == "n":
                await gate.wait()
                return _response(2)
            return _response(1)

        route = Route(parse_route("r", {"arms": [{"model": "m", "weight": 1}, {"model": "n", "shadow": True}]}), call)
        for _ in range(70):
            response = await route.infer(InferRequest("r"))
            assert response.parameters["routed_to"] == "m:1"
        gate.set()
        await asyncio.sleep(0.05)
        return route

    route = asyncio.run(run())
    shadow = route.arms[1]
    assert (shadow.compared, shadow.differed, shadow.skipped) == (64, 64, 6)
    assert route.arms[0].requests == 70


# -- the routes file -------------------------------------------------------------------------------


def test_the_routes_file_is_written_whole_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "routes.json"
    write_routes(path, {"a": AB, "b": {**AB, "state": {"status": "running"}}})
    assert [p.name for p in path.parent.iterdir()] == ["routes.json"]  # no temporary left behind
    stored = read_routes(path)
    assert [(s.name, s.state) for s in stored] == [("a", None), ("b", {"status": "running"})]
    assert stored[0].declaration == AB
    assert stored[1].line > stored[0].line > 1
    assert read_routes(tmp_path / "none.json") == []


def test_a_corrupt_routes_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    path.write_text('{\n  "routes": {\n    "a": {"arms": [\n  }\n')
    with pytest.raises(RoutesFileError, match=rf"routes file {path} line 4: not valid JSON"):
        read_routes(path)
    path.write_text("[]")
    with pytest.raises(RoutesFileError, match="line 1: expected"):
        read_routes(path)


def test_an_unknown_route_is_not_found() -> None:
    from appliance.core.routes.table import RouteTable

    table = RouteTable.__new__(RouteTable)
    table.routes = {}
    with pytest.raises(NotFound, match="route 'nope' is not declared"):
        table.report("nope")
