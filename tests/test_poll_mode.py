"""POLL model-control mode (issue 10, item 4): the server follows the model repository on disk, as
``tritonserver --model-control-mode poll``. New models load, removed ones unload, changed ones reload (a
hot-swap, see also tests/test_hot_swap.py); a folder still being copied is not loaded, and gives no error, until
it is complete; the repository API cannot load or unload."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from appliance.core.poller import snapshot
from tests.support import models

POLL_SECS = 0.1
DEADLINE_S = 60
LATEST = "{ latest: { num_versions: 1 } }"
X = np.array([[1.0, 2.0]], np.float32)


def adds(client: Any, name: str, version: str = "") -> float:
    """What the served model adds to its input (tests/support/models.add_model)."""
    module = grpcclient if isinstance(client, grpcclient.InferenceServerClient) else httpclient
    tensor = module.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(X)
    return float(client.infer(name, [tensor], model_version=version).as_numpy("y")[0, 0] - X[0, 0])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except InferenceServerException:
            pass  # not there yet
        time.sleep(0.05)
    raise AssertionError(f"not within {DEADLINE_S} s: {what}")


def test_poll_mode_follows_the_repository(server_factory, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    models.write_versioned(repo, "swap", LATEST, versions=(1,))
    server = server_factory(repo, "--model-control-mode", "poll", "--repository-poll-secs", str(POLL_SECS))
    http, grpc = server.http(), server.grpc()
    assert adds(http, "swap") == 1.0  # loaded at start, as in NONE mode

    # The repository API refuses, with Triton's text and status
    for call in (http.load_model, http.unload_model, grpc.load_model, grpc.unload_model):
        with pytest.raises(InferenceServerException) as info:
            call("swap")
        assert info.value.status() in ("503", "StatusCode.UNAVAILABLE")
        assert "explicit model load / unload is not allowed if polling is enabled" in info.value.message()

    # A new model folder loads (written file by file: it loads once it stays the same)
    models.write_versioned(repo, "fresh", LATEST, versions=(1,))
    wait_until(lambda: http.is_model_ready("fresh"), "the new model 'fresh' is ready")
    assert adds(grpc, "fresh") == 1.0

    # A changed version reloads: the new file's answers
    (repo / "swap" / "1" / "model.onnx").write_bytes(models.add_model(5.0))
    wait_until(lambda: adds(http, "swap") == 5.0, "'swap' version 1 answers with the changed file")
    assert adds(grpc, "swap") == 5.0

    # A version folder added: with latest 1, version 2 serves and version 1 goes
    (repo / "swap" / "2").mkdir()
    (repo / "swap" / "2" / "model.onnx").write_bytes(models.add_model(7.0))
    wait_until(lambda: http.is_model_ready("swap", "2"), "'swap' version 2 is ready")
    assert adds(grpc, "swap") == 7.0 and not http.is_model_ready("swap", "1")

    # A removed model folder unloads
    shutil.rmtree(repo / "fresh")
    wait_until(lambda: not http.is_model_ready("fresh"), "the removed model 'fresh' is unloaded")
    rows = [r for r in http.get_model_repository_index() if r["name"] == "fresh"]
    assert rows == [{"name": "fresh", "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"}]

    # A change that fails to load leaves what served serving, and the log says why
    (repo / "swap" / "config.pbtxt").write_text("this is not a model config")
    wait_until(lambda: "model 'swap' failed to load" in server.log(), "the broken config is reported")
    assert "config.pbtxt" in server.log()
    assert http.is_model_ready("swap") and adds(grpc, "swap") == 7.0
    assert "Traceback" not in server.log()  # the poller logged the error and carries on

    # The poller stops cleanly at shutdown
    assert server.stop() == 0
    assert "Traceback" not in server.log()


def test_half_copied_version_is_loaded_only_when_complete(server_factory, tmp_path: Path) -> None:
    """A version folder copied slowly, in pieces, over many poll intervals: while the copy runs the old version
    serves and nothing reports an error; once it is complete the new version loads, once."""
    repo = tmp_path / "repo"
    repo.mkdir()
    models.write_versioned(repo, "swap", LATEST, versions=(1,))
    poll_secs = 0.2
    server = server_factory(repo, "--model-control-mode", "poll", "--repository-poll-secs", str(poll_secs))
    http = server.http()
    assert adds(http, "swap") == 1.0

    model = onnx.load_from_string(models.add_model(2.0))
    model.doc_string = "a larger file, so that its copy takes many pieces " * 300
    data = model.SerializeToString()
    half = len(data) // 2
    target = repo / "swap" / "2" / "model.onnx"
    target.parent.mkdir()
    copying = threading.Event()
    copying.set()

    def copy_first_half() -> None:
        """Like a slow copy: a little more every 20 ms, for 8 poll intervals."""
        pieces = int(8 * poll_secs / 0.02)
        with target.open("wb", buffering=0) as out:
            for piece in range(pieces):
                out.write(data[piece * half // pieces : (piece + 1) * half // pieces])
                time.sleep(0.02)
        copying.clear()

    writer = threading.Thread(target=copy_first_half)
    writer.start()
    checks = 0
    while copying.is_set():
        assert adds(http, "swap") == 1.0 and not http.is_model_ready("swap", "2")
        rows = [r for r in http.get_model_repository_index() if r["name"] == "swap"]
        assert rows == [{"name": "swap", "version": "1", "state": "READY", "reason": ""}]
        checks += 1
        time.sleep(poll_secs / 2)
    writer.join()
    assert checks > 1
    assert "ERROR" not in server.log() and "failed to load" not in server.log()

    with target.open("ab") as out:  # the copy completes
        out.write(data[half:])
    wait_until(lambda: http.is_model_ready("swap", "2"), "'swap' version 2 is ready once its copy is complete")
    assert adds(http, "swap") == 2.0
    assert "ERROR" not in server.log()
    assert server.log().count("model 'swap' is new or changed") == 1  # loaded once, when it was complete


def test_snapshot_sees_every_change_but_hidden_copies(tmp_path: Path) -> None:
    """What the poller compares: a file growing, replaced or added changes it; ``.name`` entries do not."""
    assert snapshot(tmp_path / "missing") is None
    folder = tmp_path / "model"
    (folder / "1").mkdir(parents=True)
    first = snapshot(folder)
    assert first == snapshot(folder)
    (folder / "1" / "model.onnx").write_bytes(b"ab")
    grown = snapshot(folder)
    assert grown is not None and grown != first
    (folder / ".2.partial").mkdir()
    (folder / ".2.partial" / "model.onnx").write_bytes(b"abc")
    (folder / "1" / ".model.onnx.tmp").write_bytes(b"xy")
    assert snapshot(folder) == grown
    (folder / ".2.partial").rename(folder / "2")
    assert snapshot(folder) != grown
    (folder / "1" / ".model.onnx.tmp").replace(folder / "1" / "model.onnx")  # same size, another file
    assert [e for e in snapshot(folder) or () if e[0] == "1/model.onnx"] != [e for e in grown if e[0] == "1/model.onnx"]
