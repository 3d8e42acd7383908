"""Triton's QA add_sub models (issue 8): the ONNX sets of ``gen_qa_models.py`` (``tests/support/qa_models.py``),
BYTES models and every version policy included, each set served by one real ``appliance serve`` and checked with
the real ``tritonclient`` over both transports: per model, readiness of each version under its policy, the
metadata, the top classes, Triton's texts for requests the model cannot take; per served version, the results of
every output and of each output alone against numpy; per version on disk that the policy does not serve, Triton's
error text; the variable-shape set at several shapes. Test ids name the model, the version and the transport."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.support.appliance import running_server
from tests.support.models import DATATYPES
from tests.support.qa_models import SIZE, QaModel, inputs, qa_models, write_qa_repository

MODELS = qa_models()
VARIABLE_MODELS = qa_models(variable=True)
TRANSPORTS = ["http", "grpc"]
BATCH = 3

by_model = pytest.mark.parametrize("model", [pytest.param(m, id=m.name) for m in MODELS])
by_served_version = pytest.mark.parametrize(
    ("model", "version"), [pytest.param(m, v, id=f"{m.name}-v{v}") for m in MODELS for v in m.served]
)
by_unserved_version = pytest.mark.parametrize(
    ("model", "version"), [pytest.param(m, v, id=f"{m.name}-v{v}") for m in MODELS for v in m.not_served]
)
by_variable_model = pytest.mark.parametrize("model", [pytest.param(m, id=m.name) for m in VARIABLE_MODELS])
by_transport = pytest.mark.parametrize("transport", TRANSPORTS)


@contextlib.contextmanager
def serving(tmp_path_factory: pytest.TempPathFactory, variable: bool) -> Iterator[dict[str, Any]]:
    """``appliance serve`` over a repository of one set; one client per transport for the whole module."""
    repo = tmp_path_factory.mktemp("qa_variable" if variable else "qa") / "repo"
    write_qa_repository(repo, variable)
    with running_server(repo, repo.parent / "server.log") as server:
        made = {"http": server.http(), "grpc": server.grpc()}
        yield made
        for client in made.values():
            client.close()


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with serving(tmp_path_factory, variable=False) as made:
        yield made


@pytest.fixture(scope="module")
def variable_clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with serving(tmp_path_factory, variable=True) as made:
        yield made


def infer(
    client: Any,
    transport: str,
    model: QaModel,
    version: int | None,
    outputs: list[str] | None,
    seed: int,
    class_count: int = 0,
    free: int = SIZE,
) -> tuple[dict[str, np.ndarray | None], dict[str, Any], dict[str, np.ndarray]]:
    """One request; returns each output as numpy (None if not in the response), the response's JSON and what
    numpy expects of every output. With ``outputs``, HTTP sends and receives JSON; without, binary. ``free``: the
    size of each variable dimension."""
    module: Any = grpcclient if transport == "grpc" else httpclient
    in0, in1 = inputs(model, BATCH, seed, free)
    tensors = []
    for name, data in (("INPUT0", in0), ("INPUT1", in1)):
        tensor = module.InferInput(name, list(data.shape), model.input)
        if transport == "http":
            tensor.set_data_from_numpy(data, binary_data=outputs is None)
        else:
            tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    requested = None
    if outputs is not None:
        if transport == "http":
            requested = [
                module.InferRequestedOutput(name, binary_data=False, class_count=class_count) for name in outputs
            ]
        else:
            requested = [module.InferRequestedOutput(name, class_count=class_count) for name in outputs]
    result = client.infer(model.name, tensors, model_version="" if version is None else str(version), outputs=requested)
    response = result.get_response() if transport == "http" else result.get_response(as_json=True)
    got = {name: _as_bytes(result.as_numpy(name)) for name in model.outputs}
    served = version if version is not None else max(model.served)
    return got, response, model.expected(served, in0, in1)


def _as_bytes(array: np.ndarray | None) -> np.ndarray | None:
    """BYTES received as JSON come back as str; as bytes, like binary ones, for comparing."""
    if array is None or array.dtype != object:
        return array
    return np.array([v.encode() if isinstance(v, str) else v for v in array.reshape(-1)], object).reshape(array.shape)


def metadata(client: Any, transport: str, name: str, version: str = "") -> dict[str, Any]:
    """Model metadata as JSON from either client (gRPC's message through ``as_json``)."""
    if transport == "http":
        return client.get_model_metadata(name, version)
    return client.get_model_metadata(name, version, as_json=True)


def check_output(
    model: QaModel, name: str, got: np.ndarray | None, expected: np.ndarray, batch: int = BATCH, free: int = SIZE
) -> None:
    assert got is not None, f"{name} missing from the response"
    assert got.dtype == expected.dtype, f"{name}: {got.dtype} returned, {expected.dtype} expected"
    assert list(got.shape) == model.shape(batch, free)
    np.testing.assert_array_equal(got, expected, err_msg=name)


# -- readiness and metadata, per model -------------------------------------------------------------


@by_transport
@by_model
def test_each_version_is_ready_as_the_policy_says(clients: dict[str, Any], model: QaModel, transport: str) -> None:
    client = clients[transport]
    assert client.is_model_ready(model.name)
    readiness = {v: client.is_model_ready(model.name, str(v)) for v in (1, 2, 3, 4)}
    assert readiness == {v: v in model.served for v in (1, 2, 3, 4)}, f"policy {model.policy}"


@by_transport
@by_model
def test_metadata_names_types_shapes_and_served_versions(
    clients: dict[str, Any], model: QaModel, transport: str
) -> None:
    client = clients[transport]
    meta = metadata(client, transport, model.name)
    assert meta["name"] == model.name
    assert meta["versions"] == [str(v) for v in model.served]
    for version in model.served:  # as Triton: the metadata of one version lists that version alone
        served = metadata(client, transport, model.name, str(version))
        assert (served["name"], served["versions"]) == (model.name, [str(version)])
    assert meta["platform"] == "onnxruntime_onnx"
    shape = [-1, SIZE] if model.batched else [SIZE]
    tensors = {(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in meta["inputs"] + meta["outputs"]}
    assert tensors == {
        ("INPUT0", model.input, tuple(shape)),
        ("INPUT1", model.input, tuple(shape)),
        ("OUTPUT0", model.output0, tuple(shape)),
        ("OUTPUT1", model.output1, tuple(shape)),
    }
    config = (
        client.get_model_config(model.name)
        if transport == "http"
        else client.get_model_config(model.name, as_json=True)["config"]
    )
    assert int(config.get("max_batch_size", 0)) == (8 if model.batched else 0)
    types = {t["name"]: t["data_type"] for t in config["input"] + config["output"]}
    assert types == {
        "INPUT0": DATATYPES[model.input][2],
        "INPUT1": DATATYPES[model.input][2],
        "OUTPUT0": DATATYPES[model.output0][2],
        "OUTPUT1": DATATYPES[model.output1][2],
    }


# -- inference, per served version -----------------------------------------------------------------


@by_transport
@by_served_version
def test_a_served_version_adds_and_subtracts(
    clients: dict[str, Any], model: QaModel, version: int, transport: str
) -> None:
    got, response, expected = infer(clients[transport], transport, model, version, None, seed=version)
    assert response["model_name"] == model.name and response["model_version"] == str(version)
    for name in model.outputs:
        check_output(model, name, got[name], expected[name])


@by_transport
@by_served_version
def test_a_requested_output_comes_alone(clients: dict[str, Any], model: QaModel, version: int, transport: str) -> None:
    for name in model.outputs:
        got, response, expected = infer(clients[transport], transport, model, version, [name], seed=10 + version)
        assert [o["name"] for o in response["outputs"]] == [name]
        check_output(model, name, got[name], expected[name])


@by_transport
@by_model
def test_no_version_given_is_served_by_the_latest_served(
    clients: dict[str, Any], model: QaModel, transport: str
) -> None:
    got, response, expected = infer(clients[transport], transport, model, None, None, seed=20)
    assert response["model_version"] == str(max(model.served))
    for name in model.outputs:
        check_output(model, name, got[name], expected[name])


# -- classification (Triton's QA asks OUTPUT0, which has labels, for its top classes) -------------------

CLASSES = 3
NO_CLASSES = {"FP16", "BOOL", "BYTES"}  # Triton: "class result not available for output due to unsupported type"


def top_classes(values: np.ndarray, labelled: bool) -> list[list[bytes]]:
    """Triton's classification of each row: "score:index[:label]", the highest first, the score as C++'s
    std::to_string writes it (integers as integers, floats with six decimals); equal scores by index."""
    rows = values.reshape(values.shape[0] if values.ndim > 1 else 1, -1)
    classified = []
    for row in rows:
        order = sorted(range(row.size), key=lambda i: row[i], reverse=True)[:CLASSES]
        texts = []
        for index in order:
            score = str(int(row[index])) if row.dtype.kind in "iu" else f"{float(row[index]):f}"
            texts.append(f"{score}:{index}{f':label{index}' if labelled else ''}".encode())
        classified.append(texts)
    return classified


@by_transport
@by_model
def test_class_count_gives_tritons_top_classes(clients: dict[str, Any], model: QaModel, transport: str) -> None:
    for name, datatype in model.outputs.items():
        if datatype in NO_CLASSES:
            with pytest.raises(InferenceServerException) as info:
                infer(clients[transport], transport, model, None, [name], seed=30, class_count=CLASSES)
            assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT")
            assert f"class result not available for output due to unsupported type '{datatype}'" in (
                info.value.message()
            )
            continue
        got, response, expected = infer(
            clients[transport], transport, model, None, [name], seed=30, class_count=CLASSES
        )
        classes = got[name]
        assert classes is not None and classes.dtype == object
        want = top_classes(expected[name], labelled=name == "OUTPUT0")
        assert classes.tolist() == (want if model.batched else want[0]), name


# -- requests the model cannot take get Triton's texts ----------------------------------------------

NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each "
    "input shape. If you want to specify the full shape including the batch dim in your input dims config, try "
    "setting max_batch_size to zero. See the model configuration docs for more info on max_batch_size."
)


def send(client: Any, transport: str, model: QaModel, arrays: dict[str, tuple[str, np.ndarray]]) -> Any:
    """Infer with the given (datatype, data) per input name, whatever the model expects."""
    module: Any = grpcclient if transport == "grpc" else httpclient
    tensors = []
    for name, (datatype, data) in arrays.items():
        tensor = module.InferInput(name, list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    return client.infer(model.name, tensors)


def refused(call: Any) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), info.value.message()
    return str(info.value.message())


@by_transport
@by_model
def test_bad_requests_get_tritons_texts(clients: dict[str, Any], model: QaModel, transport: str) -> None:
    client = clients[transport]
    where = "[request id: <id_unknown>] "
    in0, in1 = inputs(model, BATCH, seed=40)
    if model.batched:  # the largest batch serves; one more does not
        big0, big1 = inputs(model, 8, seed=41)
        result = send(client, transport, model, {"INPUT0": (model.input, big0), "INPUT1": (model.input, big1)})
        expected = model.expected(max(model.served), big0, big1)
        for name in model.outputs:
            check_output(model, name, _as_bytes(result.as_numpy(name)), expected[name], batch=8)
        over0, over1 = (np.concatenate([x, x[:1]]) for x in (big0, big1))
        text = refused(
            lambda: send(client, transport, model, {"INPUT0": (model.input, over0), "INPUT1": (model.input, over1)})
        )
        assert text == (
            f"{where}inference request batch-size must be <= 8 for '{model.name}' (input 'INPUT0' has shape [9,16])"
        )
    short = in0[..., :-1]
    text = refused(
        lambda: send(client, transport, model, {"INPUT0": (model.input, short), "INPUT1": (model.input, in1)})
    )
    expected_dims, got_dims = ("[-1,16]", f"[{BATCH},15]") if model.batched else ("[16]", "[15]")
    assert text == (
        f"{where}unexpected shape for input 'INPUT0' for model '{model.name}'. Expected {expected_dims}, got "
        f"{got_dims}. {NOTE if model.batched else ''}"
    )
    other = "FP64" if model.input != "FP64" else "FP32"
    wrong = in1.astype(DATATYPES[other][1]) if model.input != "BYTES" else np.zeros(in1.shape, np.float64)
    text = refused(lambda: send(client, transport, model, {"INPUT0": (model.input, in0), "INPUT1": (other, wrong)}))
    assert (
        text
        == f"{where}inference input 'INPUT1' data-type is '{other}', but model '{model.name}' expects '{model.input}'"
    )
    module: Any = grpcclient if transport == "grpc" else httpclient
    good = [module.InferInput(n, list(x.shape), model.input) for n, x in (("INPUT0", in0), ("INPUT1", in1))]
    for tensor, data in zip(good, (in0, in1), strict=True):
        tensor.set_data_from_numpy(data)
    text = refused(lambda: client.infer(model.name, good, outputs=[module.InferRequestedOutput("NOPE")]))
    assert text == f"unexpected inference output 'NOPE' for model '{model.name}' (its outputs: 'OUTPUT0', 'OUTPUT1')"
    text = refused(lambda: send(client, transport, model, {"INPUT0": (model.input, in0)}))
    assert text == (
        f"{where}expected 2 inputs but got 1 inputs for model '{model.name}'. Got input(s) ['INPUT0'], but missing "
        "required input(s) ['INPUT1']. Please provide all required input(s)."
    )


# -- versions on disk that the policy does not serve -----------------------------------------------


@by_transport
@by_unserved_version
def test_a_version_the_policy_does_not_serve_gets_tritons_text(
    clients: dict[str, Any], model: QaModel, version: int, transport: str
) -> None:
    client = clients[transport]
    for call in (
        lambda: infer(client, transport, model, version, None, seed=0),
        lambda: client.get_model_metadata(model.name, str(version)),
        lambda: client.get_model_config(model.name, str(version)),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() in ("404", "StatusCode.NOT_FOUND")
        assert info.value.message() == f"Request for unknown model: '{model.name}' version {version} is not found"


# -- the variable-shape set ----------------------------------------------------------------------------


@by_transport
@by_variable_model
def test_variable_dims_are_minus_one_in_the_metadata(
    variable_clients: dict[str, Any], model: QaModel, transport: str
) -> None:
    client = variable_clients[transport]
    meta = metadata(client, transport, model.name)
    assert meta["versions"] == ["1"]
    shapes = {t["name"]: [int(d) for d in t["shape"]] for t in meta["inputs"] + meta["outputs"]}
    assert shapes == dict.fromkeys(["INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1"], model.client_dims)


@by_transport
@by_variable_model
def test_variable_shapes_add_and_subtract(variable_clients: dict[str, Any], model: QaModel, transport: str) -> None:
    client = variable_clients[transport]
    for free in (1, 5):
        got, response, expected = infer(client, transport, model, None, None, seed=50 + free, free=free)
        assert [int(d) for d in response["outputs"][0]["shape"]] == model.shape(BATCH, free)
        for name in model.outputs:
            check_output(model, name, got[name], expected[name], free=free)
    got, _, expected = infer(client, transport, model, 1, ["OUTPUT1"], seed=53, free=3)
    check_output(model, "OUTPUT1", got["OUTPUT1"], expected["OUTPUT1"], free=3)
    assert got["OUTPUT0"] is None


@by_transport
@by_variable_model
def test_variable_shape_of_another_rank_gets_tritons_text(
    variable_clients: dict[str, Any], model: QaModel, transport: str
) -> None:
    client = variable_clients[transport]
    in0, in1 = inputs(model, BATCH, seed=60, free=4)

    # One dimension fewer (the last two as one) or, from one, two.
    def other_rank(x: np.ndarray) -> np.ndarray:
        return x.reshape(*x.shape[:-2], -1) if x.ndim > 1 else x.reshape(1, -1)

    flat0, flat1 = other_rank(in0), other_rank(in1)
    text = refused(
        lambda: send(client, transport, model, {"INPUT0": (model.input, flat0), "INPUT1": (model.input, flat1)})
    )
    if model.batched and flat0.ndim == 1:  # no batch dimension left: Triton reads the first as the batch
        assert "inference request batch-size must be <= 8" in text
        return
    assert text == (
        f"[request id: <id_unknown>] unexpected shape for input 'INPUT0' for model '{model.name}'. Expected "
        f"[{','.join(str(d) for d in model.client_dims)}], got [{','.join(str(d) for d in flat0.shape)}]. "
        f"{NOTE if model.batched else ''}"
    )
