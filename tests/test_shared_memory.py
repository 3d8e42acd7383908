"""System shared memory (issue 8, item 2): Triton's extension, with the real ``tritonclient`` and its
``tritonclient.utils.shared_memory`` against the real server, on both transports."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from tests.support import models
from tests.support.appliance import ServerProcess, running_server

TRANSPORTS = ("http", "grpc")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("shm") / "repo"
    root.mkdir()
    models.write_slow(root, "slow")  # x FP32 [B,4] -> y = x; n INT64 [B,1] says how long it runs
    models.write_identity(root, "BYTES", batched=True)
    models.write_identity(root, "FP16", batched=False)
    # Requests run on the instance thread even alone: a lone request on an idle model otherwise runs on the event
    # loop when its measured compute is short (Placement), and "slow" measures short on small n, so a long one
    # would block the loop and nothing could queue behind it (test_unregistering_a_region_while_...).
    log = tmp_path_factory.mktemp("logs") / "shm-server.log"
    with running_server(root, log, "--inline-alone-compute-us", "0") as process:
        yield process


def client(server: ServerProcess, transport: str) -> Any:
    if transport == "http":
        return httpclient.InferenceServerClient(server.http_url)
    return grpcclient.InferenceServerClient(server.grpc_url)


def module(transport: str) -> Any:
    return httpclient if transport == "http" else grpcclient


class Regions:
    """Shared-memory objects created by a test (unique keys), destroyed at the end."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.tag = uuid.uuid4().hex[:8]

    def create(self, name: str, size: int, *arrays: np.ndarray) -> tuple[Any, str]:
        key = f"/appliance_test_{self.tag}_{name}"
        handle = shm.create_shared_memory_region(f"{name}_{self.tag}", key, size)
        if arrays:
            shm.set_shared_memory_region(handle, list(arrays))
        self.handles.append(handle)
        return handle, key

    def destroy(self) -> None:
        for handle in self.handles:
            shm.destroy_shared_memory_region(handle)


@pytest.fixture
def regions(server: ServerProcess) -> Iterator[Regions]:
    made = Regions()
    yield made
    httpclient.InferenceServerClient(server.http_url).unregister_system_shared_memory()
    made.destroy()


def mapped_keys(server: ServerProcess) -> list[str]:
    """The shared-memory objects the server process has mapped now."""
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    return [line.split()[5] for line in maps.splitlines() if "/dev/shm/appliance_test_" in line]


def open_fds(server: ServerProcess) -> list[str]:
    """The server's open descriptors of shared-memory objects (its sockets come and go with clients)."""
    folder = f"/proc/{server.process.pid}/fd"
    targets = []
    for fd in os.listdir(folder):
        try:
            targets.append(os.readlink(f"{folder}/{fd}"))
        except FileNotFoundError:  # closed meanwhile
            continue
    return sorted(t for t in targets if t.startswith("/dev/shm/"))


def error_of(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


# -- the extension ---------------------------------------------------------------------------------


def test_server_metadata_announces_system_shared_memory_only(server: ServerProcess) -> None:
    for transport in TRANSPORTS:
        extensions = client(server, transport).get_server_metadata(**({"as_json": True} if transport == "grpc" else {}))
        assert "system_shared_memory" in extensions["extensions"]
        assert "cuda_shared_memory" not in extensions["extensions"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_inputs_and_outputs_in_regions_mixed_with_ordinary_tensors(
    server: ServerProcess, regions: Regions, transport: str
) -> None:
    c, m = client(server, transport), module(transport)
    x = models.sample("FP32", (3, 4), seed=7)
    region_in, key_in = regions.create("x", x.nbytes + 64, x)  # the tensor at offset 0 of a larger object
    region_out, key_out = regions.create("y", 256)
    c.register_system_shared_memory(f"x_{regions.tag}", key_in, x.nbytes + 64)
    c.register_system_shared_memory(f"y_{regions.tag}", key_out, 256)
    status = c.get_system_shared_memory_status(**({"as_json": True} if transport == "grpc" else {}))
    names = [r["name"] for r in status] if transport == "http" else list(status["regions"])
    assert sorted(names) == sorted([f"x_{regions.tag}", f"y_{regions.tag}"])

    inputs = [m.InferInput("x", [3, 4], "FP32"), m.InferInput("n", [3, 1], "INT64")]
    inputs[0].set_shared_memory(f"x_{regions.tag}", x.nbytes)
    inputs[1].set_data_from_numpy(np.ones((3, 1), np.int64))  # an ordinary tensor beside it
    output = m.InferRequestedOutput("y")
    output.set_shared_memory(f"y_{regions.tag}", 128, offset=64)  # at an offset into the region
    result = c.infer("slow", inputs, outputs=[output])

    described = result.get_output("y")
    shape = described["shape"] if transport == "http" else list(described.shape)
    assert shape == [3, 4]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(region_out, np.float32, [3, 4], offset=64), x)
    if transport == "http":  # the data is in the region only: the response describes the output
        assert result.get_response()["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [3, 4]}]
    else:  # an empty raw entry keeps the output's place, as Triton's does
        assert list(result.get_response().raw_output_contents) == [b""]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bytes_and_fp16_through_regions(server: ServerProcess, regions: Regions, transport: str) -> None:
    c, m = client(server, transport), module(transport)
    # UTF-8 only: ONNX Runtime's Python API passes strings, not bytes (the backend decodes them)
    words = np.array([[b"alpha", b"", "bêta".encode(), b"12"]], dtype=object)
    serialized = serialize_byte_tensor(words)
    size = len(serialized.item())
    _, key_in = regions.create("w", size, serialized)
    out_handle, key_out = regions.create("o", 1024)
    c.register_system_shared_memory(f"w_{regions.tag}", key_in, size)
    c.register_system_shared_memory(f"o_{regions.tag}", key_out, 1024)
    name = "identity_bytes"
    tensor = m.InferInput("INPUT0", [1, 4], "BYTES")
    tensor.set_shared_memory(f"w_{regions.tag}", size)
    output = m.InferRequestedOutput("OUTPUT0")
    output.set_shared_memory(f"o_{regions.tag}", 1024)
    c.infer(name, [tensor], outputs=[output])
    back = shm.get_contents_as_numpy(out_handle, np.object_, [1, 4])
    assert [bytes(b) for b in back.reshape(-1)] == list(words.reshape(-1))

    half = models.sample("FP16", (2, 3), seed=3)
    _, key_h = regions.create("h", half.nbytes, half)
    c.register_system_shared_memory(f"h_{regions.tag}", key_h, half.nbytes)
    tensor = m.InferInput("INPUT0", [2, 3], "FP16")
    tensor.set_shared_memory(f"h_{regions.tag}", half.nbytes)
    np.testing.assert_array_equal(c.infer("identity_fp16_nobatch", [tensor]).as_numpy("OUTPUT0"), half)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_registering_what_cannot_be_mapped_is_a_client_error_and_maps_nothing(
    server: ServerProcess, regions: Regions, transport: str, tmp_path: Path
) -> None:
    c = client(server, transport)
    _, key = regions.create("small", 64)
    before = (open_fds(server), mapped_keys(server))
    link = Path(f"/dev/shm/appliance_test_{regions.tag}_link")
    link.symlink_to(f"/dev/shm{key}")
    os.mkdir(f"/dev/shm/appliance_test_{regions.tag}_dir")
    try:
        cases = {
            "/appliance_test_never_created": "Unable to open shared memory region: '/appliance_test_never_created'",
            "/../etc/passwd": "not a valid shared memory key",
            f"/{link.name}": f"Unable to open shared memory region: '/{link.name}'",  # symlinks are not followed
            f"/appliance_test_{regions.tag}_dir": "Unable to open shared memory region",
        }
        for bad_key, text in cases.items():
            error = error_of(lambda k=bad_key: c.register_system_shared_memory("bad", k, 16))
            assert text in error.message(), error.message()
            assert error.status() in ("400", "StatusCode.INVALID_ARGUMENT")
        error = error_of(lambda: c.register_system_shared_memory("big", key, 128))
        assert "offset 0 + byte_size 128 = 128 is beyond the end of" in error.message()
        error = error_of(lambda: c.register_system_shared_memory("far", key, 8, offset=4096))
        assert "offset 4096 + byte_size 8" in error.message()
        assert (open_fds(server), mapped_keys(server)) == before
        c.register_system_shared_memory("once", key, 64)
        error = error_of(lambda: c.register_system_shared_memory("once", key, 64))
        assert error.message() == "shared memory region 'once' already in manager"
        assert error.status() in ("400", "StatusCode.ALREADY_EXISTS")
    finally:
        link.unlink()
        os.rmdir(f"/dev/shm/appliance_test_{regions.tag}_dir")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_requests_naming_regions_wrongly_are_client_errors(
    server: ServerProcess, regions: Regions, transport: str
) -> None:
    c, m = client(server, transport), module(transport)
    x = models.sample("FP32", (1, 4), seed=1)
    n = np.ones((1, 1), np.int64)
    _, key = regions.create("x", 32, x)
    c.register_system_shared_memory(f"x_{regions.tag}", key, 32)

    def infer(region: str, size: int, offset: int = 0, out: tuple[str, int, int] | None = None) -> str:
        inputs = [m.InferInput("x", [1, 4], "FP32"), m.InferInput("n", [1, 1], "INT64")]
        inputs[0].set_shared_memory(region, size, offset)
        inputs[1].set_data_from_numpy(n)
        outputs = None
        if out is not None:
            outputs = [m.InferRequestedOutput("y")]
            outputs[0].set_shared_memory(*out)
        error = error_of(lambda: c.infer("slow", inputs, outputs=outputs))
        assert error.status() in ("400", "StatusCode.INVALID_ARGUMENT"), error
        return error.message()

    assert infer("never_registered", 16) == "Unable to find shared memory region: 'never_registered'"
    assert infer(f"x_{regions.tag}", 16, offset=24) == (
        f"Invalid offset + byte size for shared memory region: 'x_{regions.tag}' "
        "(offset 24 + byte_size 16 = 40, the region holds 32 bytes)"
    )
    assert infer(f"x_{regions.tag}", 12) == (
        "input byte size mismatch for input 'x' for model 'slow'. Expected 16, got 12"
    )
    assert infer(f"x_{regions.tag}", 16, out=(f"x_{regions.tag}", 8, 0)) == (
        "shared memory size specified with the request for output 'y' (8 bytes) should be at least 16 bytes "
        "to hold the results"
    )
    assert "the region holds 32 bytes" in infer(f"x_{regions.tag}", 16, out=(f"x_{regions.tag}", 16, 20))


def test_rest_tensor_with_data_and_region_is_refused(server: ServerProcess, regions: Regions) -> None:
    import httpx

    body = {
        "inputs": [
            {
                "name": "x",
                "shape": [1, 4],
                "datatype": "FP32",
                "data": [1, 2, 3, 4],
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 16},
            }
        ]
    }
    answer = httpx.post(f"{server.base}/v2/models/slow/infer", json=body)
    assert answer.status_code == 400
    assert "But set 'data' 'shared_memory_region'" in answer.json()["error"]
    body["inputs"][0]["parameters"] = {"shared_memory_region": "r"}
    del body["inputs"][0]["data"]
    answer = httpx.post(f"{server.base}/v2/models/slow/infer", json=body)
    assert answer.json()["error"] == (
        "input 'x': parameter 'shared_memory_byte_size' is required with 'shared_memory_region'"
    )
    answer = httpx.post(f"{server.base}/v2/systemsharedmemory/region/r/register", json={"key": "/k"})
    assert (answer.status_code, answer.json()["error"]) == (
        400,
        "Shared memory register request has no 'byte_size' field",
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cuda_shared_memory_is_not_supported(server: ServerProcess, transport: str) -> None:
    c = client(server, transport)
    if transport == "http":
        assert c.get_cuda_shared_memory_status() == []
    else:
        assert not c.get_cuda_shared_memory_status().regions
    error = error_of(lambda: c.register_cuda_shared_memory("gpu", b"\0" * 64, 0, 64))
    assert "CUDA shared memory is not supported" in error.message()
    assert error.status() in ("400", "StatusCode.UNIMPLEMENTED")
    c.unregister_cuda_shared_memory()  # nothing registered: nothing to do, as in Triton


def test_status_of_an_unknown_region_is_triton_not_found(server: ServerProcess) -> None:
    for transport in TRANSPORTS:
        error = error_of(lambda t=transport: client(server, t).get_system_shared_memory_status("nope"))
        assert error.message() == "Unable to find system shared memory region: 'nope'"
        assert error.status() in ("404", "StatusCode.NOT_FOUND")
        client(server, transport).unregister_system_shared_memory("nope")  # as in Triton: not an error


# -- lifetime ----------------------------------------------------------------------------------------


def pending(server: ServerProcess, model: str) -> float:
    import httpx

    for line in httpx.get(f"{server.base}/metrics").text.splitlines():
        if line.startswith("appliance_pending_requests{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_unregistering_a_region_while_a_request_reads_it(server: ServerProcess, regions: Regions) -> None:
    """A request queued behind a long one holds its regions: unregistering them takes them out of the name
    table at once, the request still completes with the right data, and the mapping goes after it."""
    c = grpcclient.InferenceServerClient(server.grpc_url)
    x = models.sample("FP32", (1, 4), seed=11)
    out_handle, key_out = regions.create("y", 16)
    _, key_in = regions.create("x", 16, x)
    c.register_system_shared_memory("x_busy", key_in, 16)
    c.register_system_shared_memory("y_busy", key_out, 16)

    def request(n: int, in_regions: bool) -> tuple[list[Any], list[Any] | None]:
        inputs = [grpcclient.InferInput("x", [1, 4], "FP32"), grpcclient.InferInput("n", [1, 1], "INT64")]
        inputs[1].set_data_from_numpy(np.array([[n]], np.int64))
        if not in_regions:
            inputs[0].set_data_from_numpy(x)
            return inputs, None
        inputs[0].set_shared_memory("x_busy", 16)
        output = grpcclient.InferRequestedOutput("y")
        output.set_shared_memory("y_busy", 16)
        return inputs, [output]

    outcomes: list[Any] = []

    def run(n: int, in_regions: bool) -> threading.Thread:
        def call() -> None:
            inputs, outputs = request(n, in_regions)
            try:
                grpcclient.InferenceServerClient(server.grpc_url).infer("slow", inputs, outputs=outputs)
                outcomes.append("ok")
            except Exception as exc:  # reported by the assertion below
                outcomes.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        return thread

    busy = run(3000, in_regions=False)  # about 1.5 s on the model's one instance
    time.sleep(0.2)
    queued = run(1, in_regions=True)  # waits in the queue, holding its regions
    deadline = time.monotonic() + 10
    while pending(server, "slow") < 1:
        assert time.monotonic() < deadline, "the request in shared memory never queued behind the long one"
        time.sleep(0.01)
    c.unregister_system_shared_memory()
    assert not c.get_system_shared_memory_status().regions  # gone from the name table at once
    assert f"/dev/shm{key_in}" in mapped_keys(server)  # but still mapped for the request that reads it
    busy.join(60)
    queued.join(60)
    assert outcomes == ["ok", "ok"]
    np.testing.assert_array_equal(shm.get_contents_as_numpy(out_handle, np.float32, [1, 4]), x)
    assert mapped_keys(server) == []


def test_no_region_or_descriptor_leaks_after_1000_register_unregister_cycles(
    server: ServerProcess, regions: Regions
) -> None:
    h = httpclient.InferenceServerClient(server.http_url)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    x = models.sample("FP32", (1, 4), seed=5)
    _, key = regions.create("cycle", 16, x)
    n = np.ones((1, 1), np.int64)
    before = open_fds(server)
    for i in range(1000):
        c, m = (h, httpclient) if i % 2 else (g, grpcclient)
        c.register_system_shared_memory("cycle", key, 16)
        if i % 100 == 0:
            inputs = [m.InferInput("x", [1, 4], "FP32"), m.InferInput("n", [1, 1], "INT64")]
            inputs[0].set_shared_memory("cycle", 16)
            inputs[1].set_data_from_numpy(n)
            np.testing.assert_array_equal(c.infer("slow", inputs).as_numpy("y"), x)
        c.unregister_system_shared_memory("cycle")
    assert mapped_keys(server) == []
    assert open_fds(server) == before
    assert h.get_system_shared_memory_status() == []


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine other than loopback, if it has one (no packet is sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            address: str = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_clients_from_the_network_cannot_use_shared_memory(server_factory: Any, tmp_path: Path) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no address but loopback to connect from")
    repo = tmp_path / "repo"
    repo.mkdir()
    models.write_identity(repo, "FP32", batched=False)
    server = server_factory(repo, "--http-address", "0.0.0.0", "--grpc-address", "0.0.0.0")
    regions = Regions()
    _, key = regions.create("x", 16, np.zeros(4, np.float32))
    try:
        for transport in TRANSPORTS:
            port = server.http_port if transport == "http" else server.grpc_port
            remote = module(transport).InferenceServerClient(f"{address}:{port}")
            for call in (
                partial(remote.register_system_shared_memory, "x", key, 16),
                remote.get_system_shared_memory_status,
                remote.unregister_system_shared_memory,
            ):
                error = error_of(call)
                assert "only available to clients on this machine" in error.message()
                assert error.status() in ("403", "StatusCode.PERMISSION_DENIED")
            local = client(server, transport)
            local.register_system_shared_memory("x", key, 16)
            tensor = module(transport).InferInput("INPUT0", [1, 4], "FP32")
            tensor.set_shared_memory("x", 16)
            error = error_of(
                partial(remote.infer, "identity_fp32_nobatch", [tensor])
            )  # a region a local client registered
            assert error.status() in ("403", "StatusCode.PERMISSION_DENIED")
            np.testing.assert_array_equal(local.infer("identity_fp32_nobatch", [tensor]).as_numpy("OUTPUT0"), 0)
            local.unregister_system_shared_memory()
    finally:
        regions.destroy()


def test_clients_through_the_proxy_cannot_use_shared_memory(server: ServerProcess, regions: Regions) -> None:
    """nginx's grpc_pass (port 443) connects from loopback and names the client in x-forwarded-for, as it does
    for REST: such a client is remote, and a remote client cannot claim to be local by sending the header."""
    _, key = regions.create("proxied", 16, np.zeros(4, np.float32))
    for transport in TRANSPORTS:
        c = client(server, transport)
        forwarded = {"x-forwarded-for": "192.0.2.7"}
        error = error_of(partial(c.register_system_shared_memory, "proxied", key, 16, headers=forwarded))
        assert "only available to clients on this machine" in error.message()
        assert error.status() in ("403", "StatusCode.PERMISSION_DENIED")
        c.register_system_shared_memory("proxied", key, 16, headers={"x-forwarded-for": "127.0.0.1"})
        c.unregister_system_shared_memory("proxied")
