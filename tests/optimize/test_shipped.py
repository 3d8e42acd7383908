"""Engines shipped with the image, installed into the repository on the data partition by ``trt-optimize boot
--shipped``: first boot, an unchanged image, a new image, a model of the same name made on the device, and the
image's engines then verified against the device like any other."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

from appliance.optimize.cli import main
from appliance.optimize.shipped import MARKER

from .conftest import ORIN_AGX, FakeTensorRTBuilderForTests, write_device
from .test_boot import build_repo


def boot(repo: Path, shipped: Path, device: Path) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["boot", str(repo), "--shipped", str(shipped), "--defer-rebuilds", "--device", str(device)],
                    builder=FakeTensorRTBuilderForTests())  # fmt: skip
    assert code == 0, out.getvalue()
    return out.getvalue()


def test_shipped_engines_are_installed_kept_and_replaced(tmp_path: Path, mlp_onnx: Path) -> None:
    (tmp_path / "image").mkdir()
    shipped = build_repo(tmp_path / "image", mlp_onnx)  # what the image carries in /usr/share/appliance/engines
    device = write_device(ORIN_AGX, tmp_path / "agx.json")
    repo = tmp_path / "data" / "models"

    log = boot(repo, shipped, device)
    assert "mlp: installed from the image" in log and "mlp/1: engine matches this device, kept" in log
    assert (repo / "mlp" / "1" / "model.plan").read_bytes() == (shipped / "mlp" / "1" / "model.plan").read_bytes()
    assert (repo / "mlp" / MARKER).is_file() and not list(repo.glob(".mlp.*"))

    # Next boot, same image: nothing copied; what happened on the device (here: a local file) stays.
    (repo / "mlp" / "notes.txt").write_text("tuned on site\n")
    log = boot(repo, shipped, device)
    assert "installed" not in log and "replaced" not in log and (repo / "mlp" / "notes.txt").exists()

    # A new image ships another engine for it: replaced, whole.
    plan = shipped / "mlp" / "1" / "model.plan"
    plan.write_bytes(plan.read_bytes() + b"new image")
    log = boot(repo, shipped, device)
    assert "mlp: replaced by the image's new version" in log and not (repo / "mlp" / "notes.txt").exists()
    assert (repo / "mlp" / "1" / "model.plan").read_bytes().endswith(b"new image")
    # ... and, not matching its manifest any more, it is served on ONNX Runtime until rebuilt after boot.
    assert "mlp: on ONNX Runtime until its engines are rebuilt after boot" in log


def test_a_model_made_on_the_device_is_never_overwritten(tmp_path: Path, mlp_onnx: Path) -> None:
    (tmp_path / "image").mkdir()
    shipped = build_repo(tmp_path / "image", mlp_onnx)
    device = write_device(ORIN_AGX, tmp_path / "agx.json")
    repo = tmp_path / "data" / "models"
    shutil.copytree(shipped / "mlp", repo / "mlp")
    (repo / "mlp" / "config.pbtxt").write_text((repo / "mlp" / "config.pbtxt").read_text() + "\n# mine\n")
    log = boot(repo, shipped, device)
    assert "mlp: the repository has a model of this name that did not come from the image: kept" in log
    assert (repo / "mlp" / "config.pbtxt").read_text().endswith("# mine\n") and not (repo / "mlp" / MARKER).exists()
