"""Engines shipped with the image, installed into the model repository on the data partition.

The image carries prebuilt engines per MACHINE, read-only, in ``/usr/share/appliance/engines`` (a Triton-layout
repository: ``<model>/config.pbtxt``, ``<model>/<version>/model.plan``, ``model.plan.json``, ``model.onnx``); the
data partition holds the repository the service serves. ``trt-optimize boot --shipped DIR`` runs
:func:`install_shipped` first, at every boot:

- a shipped model the repository lacks is copied in (first boot, or a model new in this image);
- a model installed from an earlier image (its ``.shipped`` file records what was shipped) is replaced when this
  image ships something else for it, and left as it is otherwise (so a rebuild or a fallback made on this device
  stays);
- a model of the same name that did not come from the image (no ``.shipped``) is never touched.

Each copy goes to a hidden folder beside the model and is renamed into place, so a power cut leaves the old model
or the new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

MARKER = ".shipped"  # in an installed model's folder: the digest of what the image shipped


@dataclass(frozen=True, slots=True)
class Installed:
    model: str
    action: str  # installed | replaced | up-to-date | kept-local


def digest(folder: Path) -> str:
    """What a shipped model is: every file's relative path and content (dotfiles aside)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _copy_into_place(source: Path, target: Path, shipped_digest: str) -> None:
    staging = target.parent / f".{target.name}.installing"
    old = target.parent / f".{target.name}.old"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    shutil.copytree(source, staging, symlinks=False)
    (staging / MARKER).write_text(shipped_digest + "\n")
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def install_shipped(shipped: Path, repository: Path, out: TextIO) -> list[Installed]:
    def say(text: str) -> None:
        out.write(f"trt-optimize boot: {text}\n")
        out.flush()

    if not shipped.is_dir():
        return []
    repository.mkdir(parents=True, exist_ok=True)
    results = []
    for source in sorted(p for p in shipped.iterdir() if p.is_dir() and not p.name.startswith(".")):
        target = repository / source.name
        shipped_digest = digest(source)
        marker = target / MARKER
        if not target.exists():
            _copy_into_place(source, target, shipped_digest)
            say(f"{source.name}: installed from the image")
            results.append(Installed(source.name, "installed"))
        elif not marker.is_file():
            say(f"{source.name}: the repository has a model of this name that did not come from the image: kept")
            results.append(Installed(source.name, "kept-local"))
        elif marker.read_text().strip() == shipped_digest:
            results.append(Installed(source.name, "up-to-date"))
        else:
            _copy_into_place(source, target, shipped_digest)
            say(f"{source.name}: replaced by the image's new version")
            results.append(Installed(source.name, "replaced"))
    return results
