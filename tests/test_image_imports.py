"""Every module the Python package imports is installed by the image: a check of the class of defect where the
service works here and fails on the device with ModuleNotFoundError (``tomllib``: OE packages it apart, as
``python3-tomllib``, and nothing pulled it in).

The imports are read from the source (``ast``: every file of ``src/appliance``, imports inside functions too); a
standard library module is looked up in OE's ``python3-manifest.json`` at the pinned openembedded-core commit (from
``../shared/yocto/mirrors``), a third-party one in :data:`THIRD_PARTY`; the package must be in the ``RDEPENDS`` of
the appliance recipe (with the manifest's own dependencies), or, for the GPU parts, of
``packagegroup-inference-gpu``. Imports made only under ``try: ... except ImportError`` are optional."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "appliance"
MIRROR = ROOT.parent / "shared" / "yocto" / "mirrors" / "openembedded-core.git"
APPLIANCE_RECIPE = ROOT / "recipes-api" / "appliance" / "appliance_git.bb"
PACKAGEGROUP = ROOT / "recipes-core" / "packagegroups" / "packagegroup-inference.bb"

#: Top-level module -> the package of the pinned layers that installs it.
THIRD_PARTY = {
    "PIL": "python3-pillow",
    "cryptography": "python3-cryptography",
    "fastapi": "python3-fastapi",
    "google": "python3-protobuf",
    "grpc": "python3-grpcio",
    "jwt": "python3-pyjwt",
    "numpy": "python3-numpy",
    "onnx": "python3-onnx",
    "onnxruntime": "python3-onnxruntime",
    "prometheus_client": "python3-prometheus-client",
    "pycuda": "python3-pycuda",
    "pydantic": "python3-pydantic",
    "pydantic_settings": "python3-pydantic-settings",
    "starlette": "python3-starlette",
    "tensorrt": "python3-tensorrt",
    "tritonclient": "triton-client",
    "uvicorn": "python3-uvicorn",
}
#: Imported only when a feature that is off in the image is turned on, with why it is not installed.
NOT_IN_THE_IMAGE = {
    "opentelemetry": "tracing (appliance.tracing), off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: not in the image",
}
#: Modules the package needs without importing them itself: a dependency imports them only when present.
ALSO_NEEDED = {
    "tomllib": "src/appliance/settings.py: the config file is read by pydantic-settings' TomlConfigSettingsSource, "
    "which imports tomllib only if it is there",
}
#: Parts that run only with the GPU stack (TensorRT engines, trt-optimize), installed by packagegroup-inference-gpu.
GPU_ONLY = {"tensorrt", "pycuda"}


def _rdepends(recipe: Path, variable: str) -> set[str]:
    match = re.search(rf'^{re.escape(variable)} = "([^"]*)"', recipe.read_text(), re.MULTILINE)
    assert match, f"{recipe}: no {variable}"
    return set(match.group(1).replace("\\", " ").split())


def _manifest() -> dict[str, dict[str, list[str]]]:
    lock = (ROOT / "kas.lock.yml").read_text()
    commit = re.search(r"openembedded-core:\s*\n\s*commit: ([0-9a-f]{40})", lock)
    assert commit, "kas.lock.yml: no openembedded-core commit"
    if not MIRROR.is_dir():
        pytest.skip(f"no layer mirror at {MIRROR}: the image's packages cannot be read")
    text = subprocess.run(
        [
            "git",
            "-C",
            str(MIRROR),
            "show",
            f"{commit.group(1)}:meta/recipes-devtools/python/python3/python3-manifest.json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    manifest: dict[str, dict[str, list[str]]] = json.loads(
        "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    )
    return manifest


def _stdlib_packages(manifest: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    """Standard library module -> the OE package (``python3-json``) whose files hold it."""
    prefix = "${libdir}/python${PYTHON_MAJMIN}/"
    owner: dict[str, str] = {}
    for package, entry in manifest.items():
        for path in entry.get("files", []):
            if not path.startswith(prefix):
                continue
            relative = path[len(prefix) :].strip("/")
            if relative.startswith("lib-dynload/"):
                module = relative.removeprefix("lib-dynload/").split(".")[0]
            else:
                module = relative.split("/")[0].removesuffix(".py")
            owner.setdefault(module, f"python3-{package}")
    return owner


def _implicit() -> set[str]:
    """What the recipe's classes add to its RDEPENDS: python_hatchling inherits python_pep517, which inherits
    setuptools3-base, which appends python3-core (read from the pinned openembedded-core, not assumed)."""
    commit = re.search(r"openembedded-core:\s*\n\s*commit: ([0-9a-f]{40})", (ROOT / "kas.lock.yml").read_text())
    assert commit and "inherit python_hatchling" in APPLIANCE_RECIPE.read_text()
    found = set()
    for cls, wanted in (
        ("python_hatchling", "inherit python_pep517"),
        ("python_pep517", "setuptools3-base"),
        ("setuptools3-base", 'RDEPENDS:${PN}:append:class-target = " python3-core"'),
    ):
        text = subprocess.run(
            ["git", "-C", str(MIRROR), "show", f"{commit.group(1)}:meta/classes-recipe/{cls}.bbclass"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert wanted in text, f"{cls}.bbclass no longer says {wanted!r}: look again at what the recipe gets"
        found.add("python3-core")
    return found


def _closure(packages: set[str], manifest: dict[str, dict[str, list[str]]]) -> set[str]:
    seen, todo = set(packages), list(packages)
    while todo:
        name = todo.pop().removeprefix("python3-")
        for dep in manifest.get(name, {}).get("rdepends", []):
            if f"python3-{dep}" not in seen:
                seen.add(f"python3-{dep}")
                todo.append(f"python3-{dep}")
    return seen


def _imports() -> dict[str, list[tuple[str, int, bool]]]:
    """Top-level module -> where it is imported (file, line, optional: only under ``except ImportError``)."""
    found: dict[str, list[tuple[str, int, bool]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        optional: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                caught = set()
                for handler in node.handlers:
                    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                    caught |= {t.id for t in types if isinstance(t, ast.Name)}
                if caught & {"ImportError", "ModuleNotFoundError"}:
                    optional |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif not node.level and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                where = (str(path.relative_to(ROOT)), node.lineno, id(node) in optional)
                found.setdefault(top, []).append(where)
    return found


def test_every_import_is_a_package_the_image_installs() -> None:
    manifest = _manifest()
    stdlib = _stdlib_packages(manifest)
    service = _closure(_rdepends(APPLIANCE_RECIPE, "RDEPENDS:${PN}") | _implicit(), manifest)
    gpu = _rdepends(PACKAGEGROUP, "RDEPENDS:${PN}-gpu")
    missing: list[str] = []
    for module, places in sorted(_imports().items()):
        if module in ("appliance", "__future__") or module in sys.builtin_module_names:
            continue
        if all(optional for _, _, optional in places) or module in NOT_IN_THE_IMAGE:
            continue
        file, line, _ = next(p for p in places if not p[2])
        if module in sys.stdlib_module_names:
            package = stdlib.get(module)
            if package is None:
                missing.append(f"{file}:{line}: imports {module}, which python3-manifest.json does not place")
            elif package not in service:
                missing.append(f"{file}:{line}: imports {module}: {package} is not in the appliance's RDEPENDS")
            continue
        package = THIRD_PARTY.get(module)
        if package is None:
            missing.append(f"{file}:{line}: imports {module}: which package installs it? (THIRD_PARTY in {__name__})")
        elif package not in (gpu if module in GPU_ONLY else service):
            where = "packagegroup-inference-gpu" if module in GPU_ONLY else "the appliance's"
            missing.append(f"{file}:{line}: imports {module}: {package} is not in {where} RDEPENDS")
    for module, why in ALSO_NEEDED.items():
        if stdlib.get(module) not in service:
            missing.append(f"{why}: {stdlib.get(module)} is not in the appliance's RDEPENDS")
    assert missing == [], "\n".join(missing)


def test_the_check_sees_the_defect_it_is_for() -> None:
    """tomllib is in a package of its own, which the appliance must name (it did not, and failed on the device)."""
    manifest = _manifest()
    assert _stdlib_packages(manifest)["tomllib"] == "python3-tomllib"
    assert "python3-tomllib" not in _closure({"python3-core", "python3-json", "python3-asyncio"}, manifest)
    assert ("src/appliance/scaling/config.py", False) in {(f, o) for f, _, o in _imports()["tomllib"]}
    assert "tomllib" in ALSO_NEEDED  # and settings.py reads TOML through pydantic-settings
