"""The shared-memory registry in process, on real POSIX shared-memory objects: what a client cannot see through
the protocol (no copy on the way in, windows at unaligned offsets, an object shrunk after registration)."""

from __future__ import annotations

import mmap
import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from appliance.core import shared_memory
from appliance.core.errors import InvalidArgument, TooLarge
from appliance.core.shared_memory import SharedMemoryRegistry
from appliance.core.types import InferRequest, InferResponse, OutputTensor, RequestedOutput, SharedMemoryInput
from appliance.core.types import SharedMemoryRef as Ref


@pytest.fixture
def key() -> Iterator[str]:
    """A fresh shared-memory object of 3 pages, filled with 0..255 repeated."""
    name = f"appliance_test_{uuid.uuid4().hex[:8]}"
    path = f"/dev/shm/{name}"
    size = 3 * mmap.PAGESIZE
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * (size // 256))
    yield "/" + name
    os.unlink(path)


def request_for(ref: Ref, shape: tuple[int, ...], datatype: str = "UINT8") -> InferRequest:
    return InferRequest("m", shared_memory_inputs=[SharedMemoryInput("x", datatype, shape, ref)])


def test_inputs_are_views_of_the_mapping_not_copies(key: str) -> None:
    registry = SharedMemoryRegistry()
    offset = mmap.PAGESIZE + 100  # not page-aligned: the mapping starts at the page before
    registry.register("r", key, offset, 512)
    request = request_for(Ref("r", 12, 64), (64,))
    with registry.lease(request) as lease:
        lease.read_inputs()
        array = request.inputs[0].data
        assert not array.flags.owndata and not array.flags.writeable
        assert array.base is not None and not isinstance(array.base, bytes)
        expected = (np.arange(offset + 12, offset + 76) % 256).astype(np.uint8)
        np.testing.assert_array_equal(array, expected)
        with open(f"/dev/shm{key}", "r+b") as f:  # the client writes again: the view sees it (no copy)
            f.seek(offset + 12)
            f.write(b"\xff")
        assert array[0] == 255
    assert request.inputs == []  # the views leave the request with the lease
    registry.close()


def test_outputs_are_written_at_their_offset(key: str) -> None:
    registry = SharedMemoryRegistry()
    registry.register("out", key, 10, 256)
    ref = Ref("out", 4, 32)
    request = InferRequest("m", outputs=[RequestedOutput("y", shared_memory=ref)])
    values = np.arange(8, dtype=np.float32)
    response = InferResponse("m", "1", "", [OutputTensor("y", "FP32", (8,), values)])
    with registry.lease(request) as lease:
        lease.write_outputs(response)
    assert response.outputs[0].shared_memory == ref
    with open(f"/dev/shm{key}", "rb") as f:
        f.seek(14)
        np.testing.assert_array_equal(np.frombuffer(f.read(32), np.float32), values)
    registry.close()


def test_an_object_shrunk_after_registration_is_refused_not_read(key: str) -> None:
    registry = SharedMemoryRegistry()
    registry.register("r", key, 0, 2 * mmap.PAGESIZE)
    os.truncate(f"/dev/shm{key}", 100)  # reading the mapping past this would fault the whole server
    with pytest.raises(InvalidArgument, match=r"is now smaller than the registered region \(100 bytes\)"):
        with registry.lease(request_for(Ref("r", 0, 16), (16,))):
            pass
    registry.close()


def test_the_number_of_regions_is_bounded(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_memory, "MAX_REGIONS", 3)
    registry = SharedMemoryRegistry()
    for i in range(3):
        registry.register(f"r{i}", key, 0, 16)
    with pytest.raises(TooLarge, match="3 regions are registered already"):
        registry.register("r3", key, 0, 16)
    registry.unregister("r0")
    registry.register("r3", key, 0, 16)
    assert [r.name for r in registry.status()] == ["r1", "r2", "r3"]
    registry.close()
    assert registry.status() == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"shared_memory_region": ""}, "must be a non-empty string"),
        ({"shared_memory_region": "r"}, "'shared_memory_byte_size' is required"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": -1}, "must be a non-negative integer"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 4, "shared_memory_offset": True}, "non-negative"),
        ({"shared_memory_byte_size": 4}, "given without 'shared_memory_region'"),
    ],
)
def test_region_parameters_are_checked(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        shared_memory.shared_memory_ref(params, "input 'x'")


# -- only for clients on this machine --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        (None, True),  # a Unix socket
        ("10.0.0.5", False),
        ("fe80::1", False),
        ("::ffff:192.168.1.2", False),
        ("not-an-address", False),
    ],
)
def test_which_clients_are_local(host: str | None, local: bool) -> None:
    assert shared_memory.is_local_client(host) is local


class PeerOf:
    """A stand-in for grpc's servicer context, which only a live call can make: just its ``peer()``."""

    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


@pytest.mark.parametrize(
    ("peer", "local"),
    [
        ("ipv4:127.0.0.1:50051", True),
        ("ipv6:[::1]:50051", True),
        ("unix:/run/appliance/grpc.sock", True),
        ("ipv4:192.168.1.20:50051", False),
        ("ipv6:[2001:db8::1]:443", False),
        ("", False),
    ],
)
def test_grpc_peers(peer: str, local: bool) -> None:
    from appliance.grpc.service import local_client

    assert local_client(PeerOf(peer)) is local
