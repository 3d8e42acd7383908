"""Metadata, readiness, config, statistics, the repository API (index/load/unload in explicit mode),
classification, version policies, config completion, a broken model, and a repository written for Triton's
onnxruntime backend, on both transports."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from google.protobuf.message import Message
from tritonclient.utils import InferenceServerException

from tests.support import models
from tests.support.appliance import ServerProcess
from tests.support.models import ModelsRepo
from tests.support.onnx_reference import assert_same, ort_run


def infer_add(server: ServerProcess, model: str, version: str = "", transport: str = "http") -> np.ndarray:
    x = np.array([[1.0, 2.0]], np.float32)
    if transport == "http":
        inp = httpclient.InferInput("x", [1, 2], "FP32")
        inp.set_data_from_numpy(x)
        return server.http().infer(model, [inp], model_version=version).as_numpy("y")
    inp = grpcclient.InferInput("x", [1, 2], "FP32")
    inp.set_data_from_numpy(x)
    return server.grpc().infer(model, [inp], model_version=version).as_numpy("y")


# -- server --------------------------------------------------------------------------------------


def test_server_live_ready_metadata(demo_server: ServerProcess):
    http, grpc_ = demo_server.http(), demo_server.grpc()
    assert http.is_server_live() and http.is_server_ready()
    assert grpc_.is_server_live() and grpc_.is_server_ready()
    meta = http.get_server_metadata()
    assert meta["name"] == "appliance" and meta["version"]
    for extension in (
        "classification",
        "model_repository",
        "schedule_policy",
        "model_configuration",
        "statistics",
        "binary_tensor_data",
    ):
        assert extension in meta["extensions"]
    gmeta = grpc_.get_server_metadata()
    assert gmeta.name == "appliance" and list(gmeta.extensions) == meta["extensions"]


# -- model metadata, ready, config -------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_model_metadata_and_ready(demo_server: ServerProcess, transport):
    if transport == "http":
        client = demo_server.http()
        meta = client.get_model_metadata("cnn")
        meta_v = client.get_model_metadata("cnn", "1")
    else:
        client = demo_server.grpc()
        meta = client.get_model_metadata("cnn", as_json=True)
        meta_v = client.get_model_metadata("cnn", "1", as_json=True)
        for m in (meta, meta_v):
            for t in m["inputs"] + m["outputs"]:
                t["shape"] = [int(d) for d in t["shape"]]
    assert meta == meta_v
    assert meta["name"] == "cnn" and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.is_model_ready("cnn") and client.is_model_ready("cnn", "1")
    try:  # an unknown version: not ready (REST 404; gRPC may say so with NOT_FOUND)
        assert not client.is_model_ready("cnn", "2")
    except InferenceServerException as exc:
        assert exc.status() == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_model_config(demo_server: ServerProcess, transport):
    if transport == "http":
        config = demo_server.http().get_model_config("mlp")
    else:
        config = demo_server.grpc().get_model_config("mlp", as_json=True)["config"]
    assert config["name"] == "mlp" and int(config["max_batch_size"]) == 32
    assert config["input"][0]["name"] == "input" and config["input"][0]["data_type"] == "TYPE_FP32"
    assert [int(d) for d in config["input"][0]["dims"]] == [64]
    assert config["output"][0]["name"] == "logits"
    assert "dynamic_batching" in config


def test_rest_config_has_64_bit_integers_as_numbers(demo_server: ServerProcess):
    """As Triton's REST API: dims and max_batch_size are JSON numbers, not protobuf's strings."""
    config = httpx.get(f"{demo_server.base}/v2/models/cnn/config").json()
    assert config["input"][0]["dims"] == [3, 64, 64]
    assert config["max_batch_size"] == 32
    assert config["output"][0]["label_filename"] == "labels.txt"


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_model_statistics_count_requests_and_batches(server_factory, demo_repo, transport):
    server = server_factory(demo_repo)
    for batch in (1, 2, 2):
        x = np.zeros((batch, 64), np.float32)
        if transport == "http":
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            server.http().infer("mlp", [inp])
        else:
            inp = grpcclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            server.grpc().infer("mlp", [inp])
    if transport == "http":
        stats = server.http().get_inference_statistics("mlp")
    else:
        stats = server.grpc().get_inference_statistics("mlp", as_json=True)
    (mlp,) = stats["model_stats"]
    assert mlp["name"] == "mlp" and mlp["version"] == "1"
    assert int(mlp["inference_count"]) == 5 and int(mlp["execution_count"]) == 3
    assert int(mlp["inference_stats"]["success"]["count"]) == 3
    assert int(mlp["inference_stats"]["success"]["ns"]) > 0
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in mlp["batch_stats"]}
    assert sizes == {1: 1, 2: 2}
    everything = server.http().get_inference_statistics()
    assert {s["name"] for s in everything["model_stats"]} == {"mlp", "cnn"}


def test_rest_and_grpc_report_the_same_fields(server_factory, demo_repo):
    """Metadata, statistics, config and the repository index: the REST JSON, read into the gRPC message, is
    the gRPC answer field by field (submessages present alike, nothing missing on either side)."""
    server = server_factory(demo_repo, "--model-control-mode", "explicit", "--load-model", "mlp")
    for batch in (1, 2, 2):
        inp = httpclient.InferInput("input", [batch, 64], "FP32")
        inp.set_data_from_numpy(np.zeros((batch, 64), np.float32))
        server.http().infer("mlp", [inp])
    http, grpc_ = server.http(), server.grpc()

    def same(rest: object, message: Message) -> None:
        assert json_format.ParseDict(rest, type(message)()) == message

    same(http.get_server_metadata(), grpc_.get_server_metadata())
    same(http.get_model_metadata("mlp"), grpc_.get_model_metadata("mlp"))
    same(http.get_model_config("mlp"), grpc_.get_model_config("mlp").config)
    stats = http.get_inference_statistics("mlp")
    assert stats["model_stats"][0]["last_inference"] > 0 and len(stats["model_stats"][0]["batch_stats"]) == 2
    same(stats, grpc_.get_inference_statistics("mlp"))
    same(http.get_inference_statistics(), grpc_.get_inference_statistics())
    index = http.get_model_repository_index()
    assert {"name": "cnn"} in index  # on disk, never loaded: no version, state or reason
    assert {"name": "mlp", "version": "1", "state": "READY", "reason": ""} in index
    same({"models": index}, grpc_.get_model_repository_index())


# -- classification ------------------------------------------------------------------------------


def test_classification_on_both_transports(demo_server: ServerProcess, demo_repo):
    """``class_count=N`` returns the top N as "score:index:label", labels from labels.txt."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    probabilities = ort_run((demo_repo / "cnn" / "1" / "model.onnx").read_bytes(), {"image": x})["probabilities"]
    labels = (demo_repo / "cnn" / "labels.txt").read_text().splitlines()
    expected = []
    for row in probabilities:
        order = np.argsort(-row.astype(np.float64), kind="stable")[:3]
        expected.append([(float(row[i]), int(i), labels[i]) for i in order])

    hinp = httpclient.InferInput("image", list(x.shape), "FP32")
    hinp.set_data_from_numpy(x)
    http_result = demo_server.http().infer(
        "cnn", [hinp], outputs=[httpclient.InferRequestedOutput("probabilities", class_count=3)]
    )
    ginp = grpcclient.InferInput("image", list(x.shape), "FP32")
    ginp.set_data_from_numpy(x)
    grpc_result = demo_server.grpc().infer(
        "cnn", [ginp], outputs=[grpcclient.InferRequestedOutput("probabilities", class_count=3)]
    )
    for result in (http_result, grpc_result):
        got = result.as_numpy("probabilities")
        assert got.shape == (2, 3)
        for r in range(2):
            for c in range(3):
                score, index, label = got[r, c].decode().split(":")
                want_score, want_index, want_label = expected[r][c]
                assert (int(index), label) == (want_index, want_label)
                assert float(score) == pytest.approx(want_score, abs=1e-6)


def test_classification_without_batching_and_labels(models_server: ServerProcess, models_repo: ModelsRepo):
    """The Triton-style model (max_batch_size 0, reshape, labels): class_count=2 gives the top 2 of 4."""
    x = np.array([[1.0, -4.0], [3.0, 2.0]], np.float32)
    inp = httpclient.InferInput("x", [2, 2], "FP32")
    inp.set_data_from_numpy(x)
    result = models_server.http().infer(
        "triton_onnx", [inp], outputs=[httpclient.InferRequestedOutput("y", class_count=2)]
    )
    got = [s.decode().split(":") for s in result.as_numpy("y")]
    # y = 3x flattened = [3, -12, 9, 6]
    assert [(int(i), label) for _, i, label in got] == [(2, "gamma"), (3, "delta")]
    assert [float(s) for s, _, _ in got] == [9.0, 6.0]


# -- versions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["http", "grpc"])
@pytest.mark.parametrize(
    "model, served",
    [
        ("versions_all", [1, 2, 3]),
        ("versions_specific", [1, 3]),
        ("versions_latest", [2, 3]),
        ("versions_default", [3]),
    ],
)
def test_version_policy(models_server: ServerProcess, model, served, transport):
    """Version v adds v: each served version answers with its own file; the default is the highest."""
    for version in (1, 2, 3):
        if version in served:
            assert_same(
                infer_add(models_server, model, str(version), transport), np.array([[1.0, 2.0]], np.float32) + version
            )
        else:
            with pytest.raises(InferenceServerException) as info:
                infer_add(models_server, model, str(version), transport)
            assert info.value.status() in ("404", "StatusCode.NOT_FOUND")
    assert_same(infer_add(models_server, model, "", transport), np.array([[1.0, 2.0]], np.float32) + max(served))
    meta = models_server.http().get_model_metadata(model)
    assert meta["versions"] == [str(v) for v in served]


# -- config completion and broken models ---------------------------------------------------------


def test_configless_model_is_completed(models_server: ServerProcess, models_repo: ModelsRepo):
    config = models_server.http().get_model_config("autocomplete")
    assert config["max_batch_size"] > 0 and "dynamic_batching" in config
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}] or (
        config["input"][0]["name"] == "x" and config["input"][0]["dims"] == [2]
    )
    assert config["output"][0]["name"] == "y" and config["output"][0]["data_type"] == "TYPE_FP32"
    x = np.array([[1.0, 2.0]], np.float32)
    expected = ort_run(models_repo.files["autocomplete"], {"x": x})["y"]
    assert_same(infer_add(models_server, "autocomplete"), expected)
    assert_same(infer_add(models_server, "autocomplete", transport="grpc"), expected)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_broken_model_is_unavailable_with_its_error_while_others_serve(models_server: ServerProcess, transport):
    if transport == "http":
        index = models_server.http().get_model_repository_index()
        client = models_server.http()
    else:
        index = models_server.grpc().get_model_repository_index(as_json=True)["models"]
        client = models_server.grpc()
    rows = {r["name"]: r for r in index}
    broken = rows["broken"]
    assert broken["state"] == "UNAVAILABLE"
    assert "model.onnx" in broken["reason"] and "ONNX" in broken["reason"]
    assert rows["reshape"]["state"] == "READY"
    assert not client.is_model_ready("broken")
    with pytest.raises(InferenceServerException) as info:
        infer_add(models_server, "broken", transport=transport)
    assert info.value.status() in ("503", "StatusCode.UNAVAILABLE")
    assert infer_add(models_server, "versions_default", transport=transport).shape == (1, 2)


def test_repository_index_ready_only(models_server: ServerProcess):
    response = httpx.post(f"{models_server.base}/v2/repository/index", json={"ready": True})
    assert response.status_code == 200
    names = {r["name"] for r in response.json()}
    assert "broken" not in names and "reshape" in names
    assert all(r["state"] == "READY" for r in response.json())


# -- repository API in explicit mode -------------------------------------------------------------


@pytest.fixture(scope="module")
def explicit_repo(tmp_path_factory) -> ModelsRepo:
    root = tmp_path_factory.mktemp("explicit") / "repo"
    root.mkdir()
    files = {"first": models.write_versioned(root, "first", "{ latest: { num_versions: 1 } }")[3]}
    files["second"] = models.write_versioned(root, "second", "{ all: { } }", versions=(1,))[1]
    return ModelsRepo(root, files)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_explicit_mode_load_and_unload(server_factory, explicit_repo: ModelsRepo, transport):
    server = server_factory(explicit_repo.root, "--model-control-mode", "explicit", "--load-model", "first")
    client = server.http() if transport == "http" else server.grpc()
    index = (
        client.get_model_repository_index()
        if transport == "http"
        else client.get_model_repository_index(as_json=True)["models"]
    )
    rows = {r["name"]: r for r in index}
    assert rows["first"]["state"] == "READY"
    assert "state" not in rows["second"] or rows["second"]["state"] != "READY"
    assert client.is_model_ready("first")
    with pytest.raises(InferenceServerException):
        infer_add(server, "second", transport=transport)

    client.load_model("second")
    assert client.is_model_ready("second")
    assert_same(infer_add(server, "second", transport=transport), np.array([[2.0, 3.0]], np.float32))

    client.unload_model("first")
    assert not client.is_model_ready("first")
    with pytest.raises(InferenceServerException) as info:
        infer_add(server, "first", transport=transport)
    assert info.value.status() in ("503", "StatusCode.UNAVAILABLE")
    index = (
        client.get_model_repository_index()
        if transport == "http"
        else client.get_model_repository_index(as_json=True)["models"]
    )
    assert {r["name"]: r.get("state") for r in index}["first"] == "UNAVAILABLE"

    client.load_model("first")  # and back
    assert_same(infer_add(server, "first", transport=transport), np.array([[4.0, 5.0]], np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.load_model("not_there")
    assert info.value.status() in ("404", "StatusCode.NOT_FOUND")


def test_explicit_load_with_config_override(server_factory, explicit_repo: ModelsRepo):
    """Triton's load with a ``config`` parameter: the JSON config replaces config.pbtxt for that load."""
    server = server_factory(explicit_repo.root, "--model-control-mode", "explicit")
    config = {
        "name": "first",
        "backend": "onnxruntime",
        "max_batch_size": 2,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [2]}],
        "version_policy": {"specific": {"versions": [2]}},
    }
    server.http().load_model("first", config=json.dumps(config))
    assert server.http().get_model_config("first")["max_batch_size"] == 2
    assert_same(infer_add(server, "first"), np.array([[3.0, 4.0]], np.float32))


def test_repository_load_refused_in_none_mode(demo_server: ServerProcess):
    with pytest.raises(InferenceServerException) as info:
        demo_server.http().load_model("mlp")
    assert info.value.status() == "503"
    with pytest.raises(InferenceServerException) as info:
        demo_server.grpc().unload_model("mlp")
    assert info.value.status() == "StatusCode.UNAVAILABLE"
    assert demo_server.http().is_model_ready("mlp")


def test_load_of_a_broken_model_reports_its_error(server_factory, explicit_repo: ModelsRepo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(explicit_repo.root, repo)
    models.write_broken(repo)
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "first")
    with pytest.raises(InferenceServerException) as info:
        server.http().load_model("broken")
    assert info.value.status() == "400" and "model.onnx" in info.value.message()
    with pytest.raises(InferenceServerException) as info:
        server.grpc().load_model("broken")
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert server.http().is_model_ready("first")


@pytest.mark.parametrize("broken", ["version 1's model file", "config"])
def test_a_failed_reload_keeps_the_served_versions(server_factory, tmp_path, broken):
    """Hot-swap: a reload that fails, for one version or as a whole, reports why and takes nothing away; fixed,
    the next reload swaps."""
    repo = tmp_path / "repo"
    repo.mkdir()
    models.write_versioned(repo, "pair", "{ all: { } }", versions=(1, 2))  # version v adds v
    server = server_factory(repo, "--model-control-mode", "explicit", "--load-model", "pair")
    client = server.http()
    model_file = repo / "pair" / "1" / "model.onnx"
    config_file = repo / "pair" / "config.pbtxt"
    good_config = config_file.read_text()
    if broken == "config":
        config_file.write_text(good_config.replace("max_batch_size", "max_batch_sise"))
    else:  # version 2 (the one the config is completed from) still loads
        model_file.write_bytes(b"half a copy")
    for load in (client.load_model, server.grpc().load_model):
        with pytest.raises(InferenceServerException) as info:
            load("pair")
        assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
        assert ("model.onnx" if broken != "config" else "max_batch_sise") in info.value.message()
        for version, added in (("1", 1.0), ("2", 2.0)):
            assert client.is_model_ready("pair", version)
            assert_same(infer_add(server, "pair", version), np.array([[1.0 + added, 2.0 + added]], np.float32))
    model_file.write_bytes(models.add_model(5.0))  # a new version 1, which adds 5
    config_file.write_text(good_config)
    client.load_model("pair")
    assert_same(infer_add(server, "pair", "1"), np.array([[6.0, 7.0]], np.float32))


# -- a repository written for Triton ------------------------------------------------------------


def test_triton_style_repository_loads_unchanged(models_server: ServerProcess, models_repo: ModelsRepo):
    """platform onnxruntime_onnx, max_batch_size 0, reshape, a labels file, default_model_filename, two
    instances and Triton-only optimization settings: it loads and answers what ORT answers."""
    http = models_server.http()
    meta = http.get_model_metadata("triton_onnx")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [2, 2]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [4]}]
    x = np.array([[1.5, -2.0], [0.25, 8.0]], np.float32)
    expected = ort_run(models_repo.files["triton_onnx"], {"x": x})["y"].reshape(4)
    inp = httpclient.InferInput("x", [2, 2], "FP32")
    inp.set_data_from_numpy(x)
    assert_same(http.infer("triton_onnx", [inp]).as_numpy("y"), expected)
    ginp = grpcclient.InferInput("x", [2, 2], "FP32")
    ginp.set_data_from_numpy(x)
    assert_same(models_server.grpc().infer("triton_onnx", [ginp]).as_numpy("y"), expected)
