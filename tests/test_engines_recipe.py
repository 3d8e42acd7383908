"""The build-time check of shipped engines (appliance-engines' do_verify_engines), run here on an engines archive
made with trt-optimize build: BitBake's task body as the recipe has it, with a stand-in datastore (``d``) and
``bb`` module (no BitBake build runs on this machine: the task needs tensorrt-core's headers from NVIDIA)."""

from __future__ import annotations

import hashlib
import re
import tarfile
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from tests.optimize.conftest import mlp, save
from tests.optimize.test_boot import build_repo

RECIPE = Path(__file__).parent.parent / "recipes-ai" / "appliance-engines" / "appliance-engines_1.0.bb"


class Fatal(Exception):
    pass


def task() -> Any:
    body = re.search(r"^python do_verify_engines \(\) \{\n(.*?)^\}", RECIPE.read_text(), re.M | re.S)
    assert body, "do_verify_engines is not in the recipe"
    source = "def do_verify_engines(d, bb):\n" + textwrap.indent(textwrap.dedent(body.group(1)), "    ")
    namespace: dict[str, Any] = {}
    exec(compile(source, str(RECIPE), "exec"), namespace)  # noqa: S102 - the recipe's own task body
    return namespace["do_verify_engines"]


def run(tmp_path: Path, archive: Path, sha: str, trt: str = "10.3.0", capability: str = "8.7") -> list[str]:
    notes: list[str] = []
    staging = tmp_path / "staging-include"
    staging.mkdir(parents=True, exist_ok=True)
    major, minor, patch = trt.split(".")
    (staging / "NvInferVersion.h").write_text(
        f"#define TRT_MAJOR_ENTERPRISE {major}\n#define TRT_MINOR_ENTERPRISE {minor}\n"
        f"#define TRT_PATCH_ENTERPRISE {patch}\n#define TRT_BUILD_ENTERPRISE 10\n"
    )
    unpack = tmp_path / "unpack"
    (unpack / "engines").mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpack / "engines")  # our own archive (Python 3.11.2, Debian 12's, has no filter=)
    values = {
        "APPLIANCE_ENGINES_URI": f"file://{archive}",
        "APPLIANCE_ENGINES_SHA256": sha,
        "STAGING_INCDIR": str(staging),
        "APPLIANCE_ENGINES_COMPUTE_CAPABILITY": capability,
        "UNPACKDIR": str(unpack),
        "MACHINE": "jetson-agx-orin-devkit",
    }
    d = types.SimpleNamespace(getVar=values.get)

    class Fetch:
        def __init__(self, uris: list[str], d: Any) -> None:
            pass

        def localpath(self, uri: str) -> str:
            return uri.removeprefix("file://")

    def fatal(message: str) -> None:
        raise Fatal(message)

    bb = types.SimpleNamespace(fatal=fatal, note=notes.append, fetch2=types.SimpleNamespace(Fetch=Fetch))
    task()(d, bb)
    return notes


@pytest.fixture
def engines(tmp_path: Path) -> tuple[Path, str, Path]:
    onnx = save(mlp(), tmp_path / "mlp.onnx")
    repo = build_repo(tmp_path, onnx)  # built for ORIN_AGX: TensorRT 10.3.0, compute 8.7
    archive = tmp_path / "engines.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(repo, arcname=".")
    return archive, hashlib.sha256(archive.read_bytes()).hexdigest(), repo


def test_engines_that_match_their_manifests_and_the_image_pass(tmp_path: Path, engines: tuple[Path, str, Path]) -> None:
    archive, sha, _ = engines
    assert run(tmp_path, archive, sha) == ["mlp/1/model.plan.json: verified (TensorRT 10.3.0, fp16)"]


def test_what_the_build_refuses(tmp_path: Path, engines: tuple[Path, str, Path]) -> None:
    archive, sha, repo = engines
    with pytest.raises(Fatal, match="sha256 is .* APPLIANCE_ENGINES_SHA256 says 0+"):
        run(tmp_path / "a", archive, "0" * 64)
    with pytest.raises(Fatal, match="must be the sha256"):
        run(tmp_path / "b", archive, "")
    with pytest.raises(Fatal, match=r"built with TensorRT 10.3.0, the image has TensorRT 10.16.2: rebuild it"):
        run(tmp_path / "c", archive, sha, trt="10.16.2")
    with pytest.raises(Fatal, match="built for compute capability 8.7, jetson-agx-orin-devkit has 11.0"):
        run(tmp_path / "d", archive, sha, capability="11.0")
    plan = repo / "mlp" / "1" / "model.plan"
    plan.write_bytes(plan.read_bytes() + b"x")
    altered = tmp_path / "altered.tar.gz"
    with tarfile.open(altered, "w:gz") as tar:
        tar.add(repo, arcname=".")
    with pytest.raises(Fatal, match="model.plan does not match the sha256 in its manifest"):
        run(tmp_path / "e", altered, hashlib.sha256(altered.read_bytes()).hexdigest())
