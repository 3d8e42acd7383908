"""Response cache tests' shared parts: the repository with the cache on, a request over either transport with
the real tritonclient, and the cache's counts from Triton's statistics and from the metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tests.support import models
from tests.support.appliance import ServerProcess

CACHED = "\nresponse_cache { enable: true }\n"


def write_cache_repo(root: Path, demo_repo: Path) -> Path:
    """The demo models, the cnn with the response cache on (the mlp without), and 'add' (versions 1 and 2,
    y = x + version) with it on."""
    shutil.copytree(demo_repo, root)
    with (root / "cnn" / "config.pbtxt").open("a") as f:
        f.write(CACHED)
    models.write_versioned(root, "add", "{ all: { } }", versions=(1, 2))
    with (root / "add" / "config.pbtxt").open("a") as f:
        f.write(CACHED)
    return root


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, 64, 64), dtype=np.float32)


def infer(
    server: ServerProcess,
    transport: str,
    model: str,
    name: str,
    x: np.ndarray,
    version: str = "",
    classification: int = 0,
    output: str = "",
    client: Any = None,
) -> np.ndarray:
    """One request; ``client`` (a tritonclient of ``transport``) is reused when given, else a new one."""
    if transport == "http":
        inp = httpclient.InferInput(name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        outputs = [httpclient.InferRequestedOutput(output, class_count=classification)] if output else None
        result = (client or server.http()).infer(model, [inp], model_version=version, outputs=outputs)
    else:
        ginp = grpcclient.InferInput(name, list(x.shape), "FP32")
        ginp.set_data_from_numpy(x)
        goutputs = [grpcclient.InferRequestedOutput(output, class_count=classification)] if output else None
        result = (client or server.grpc()).infer(model, [ginp], model_version=version, outputs=goutputs)
    array = result.as_numpy(output or ("probabilities" if model == "cnn" else "y" if model == "add" else "logits"))
    assert array is not None
    return array


def statistics(server: ServerProcess, transport: str, model: str, version: str = "") -> dict:
    if transport == "http":
        stats = server.http().get_inference_statistics(model, version)
    else:
        stats = server.grpc().get_inference_statistics(model, version, as_json=True)
    (one,) = stats["model_stats"]
    return one


def cache_counts(stats: dict) -> tuple[int, int]:
    """(hits, misses) from one model version's statistics."""
    inference = stats["inference_stats"]
    return int(inference["cache_hit"].get("count", 0)), int(inference["cache_miss"].get("count", 0))


def cache_metrics(server: ServerProcess) -> dict[str, float]:
    """The ``appliance_cache*`` series of ``/metrics``, by name with labels."""
    text = httpx.get(f"{server.base}/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("appliance_cache"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values
