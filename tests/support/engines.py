"""TensorRT engines for tests where there is no TensorRT: a FAKE plan (bytes, not an engine) with a real manifest,
and a FAKE AGX Orin file tree that :func:`appliance.optimize.device.describe_device` reads as the device."""

from __future__ import annotations

import hashlib
from pathlib import Path

from appliance.optimize.manifest import Manifest


def fake_orin_root(root: Path) -> Path:
    """The files :func:`~appliance.optimize.device.describe_device` reads on an AGX Orin, and nothing else."""
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic\n")
    dt = root / "proc" / "device-tree"
    dt.mkdir(parents=True, exist_ok=True)
    (dt / "compatible").write_bytes(b"nvidia,p3737-0000+p3701-0005\x00nvidia,tegra234\x00")
    (dt / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    for dla in ("15880000.nvdla0", "158c0000.nvdla1"):
        (root / "sys" / "devices" / "platform" / "bus@0" / "13e00000.host1x" / dla).mkdir(parents=True, exist_ok=True)
    libs = root / "usr" / "lib" / "aarch64-linux-gnu"
    libs.mkdir(parents=True, exist_ok=True)
    (libs / "libnvinfer.so.10.3.0").touch()
    return root


def write_engine(folder: Path, tensorrt: str = "10.3.0", plan: bytes = b"FAKE serialized engine") -> Path:
    """A plan (FAKE bytes: no TensorRT here to build one) beside the version's ONNX file, and its manifest."""
    (folder / "model.plan").write_bytes(plan)
    manifest = Manifest(
        tensorrt_version=tensorrt,
        gpu_name="Orin (nvgpu)",
        compute_capability="8.7",
        precision="fp16",
        profiles=[],
        builder_flags=["FP16"],
        onnx_file="model.onnx",
        onnx_sha256=hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest(),
        plan_file="model.plan",
        plan_sha256=hashlib.sha256(plan).hexdigest(),
        created="2026-11-30T09:00:00Z",
    )
    path = folder / "model.plan.json"
    manifest.write(path)
    return path
