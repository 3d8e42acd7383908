"""Which parts of ``appliance`` may import which: read from the source with ``ast``, every import (including those
inside functions and under ``TYPE_CHECKING``), so a lazy import cannot hide a cycle.

A part is a subpackage (``core``, ``backends``, ...) or a top-level module (``settings``, ``server``, ...);
``appliance`` is the package's own ``__init__`` (``__version__``). The table is the architecture: the core owns
the backend interface (``core/backend.py``) and is handed the choice of backend (``backends.factory_for``) by the
server, so it imports no backend; the TensorRT backend runs engines through ``optimize``, never the other way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import appliance

PACKAGE = Path(appliance.__file__).parent

# part -> the other parts it may import. None: the composition root, which wires everything together.
ALLOWED: dict[str, set[str] | None] = {
    "appliance": set(),
    "settings": set(),
    "demo": set(),
    "reference_triton": set(),
    "systemd": set(),  # the notify protocol (the server's), units' states and journals (the panel's, via rest)
    "core": {"appliance", "settings"},
    "optimize": {"appliance", "core"},
    "backends": {"core", "optimize"},
    "device": set(),  # reads the device; the server wires it in, the core never sees it
    # /v2/update, /admin, /v2/units and /v2/logs?unit= (systemd), /v2/engines (the engines' manifests: optimize)
    "rest": {"appliance", "core", "device", "settings", "update", "datapart", "panel", "systemd", "optimize"},
    "grpc": {"core"},
    "tracing": {"appliance", "core"},  # the server hands it to the core, which never imports it
    "scaling": {"core"},  # the autoscaler daemon: the service's decision type and file helpers, nothing else
    "update": {"core"},  # A/B updates (root's side and the record): file helpers only
    "datapart": set(),  # the data partition, made ready at boot before the service runs
    "panel": set(),  # the admin panel's HTML and static files: rendered by rest/panel.py, filled from /v2
    "process": {"settings"},  # what serve sets up in its process before the servers start: the server calls it
    "server": None,
    "cli": None,
}


def _module_name(path: Path) -> str:
    parts = ["appliance", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    """The ``appliance`` modules that a file imports, absolute."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from . import datatypes" imports the module appliance.core.datatypes, not just the package.
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            found.update({m for m in submodules if _exists(m)} or {target})
    return {m for m in found if m == "appliance" or m.startswith("appliance.")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "appliance"


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_part_is_in_the_table() -> None:
    assert {_part(_module_name(path)) for path in MODULES} == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_table(path: Path) -> None:
    part = _part(_module_name(path))
    allowed = ALLOWED[part]
    if allowed is None:
        return
    outside = sorted(m for m in _imports(path) if _part(m) != part and _part(m) not in allowed)
    assert not outside, f"{path.relative_to(PACKAGE)} ({part}) may import only {sorted(allowed)}; imports {outside}"


def test_the_table_has_no_cycles() -> None:
    """Below the composition root, the allowed directions form no cycle (so neither can the imports)."""
    graph = {part: allowed for part, allowed in ALLOWED.items() if allowed is not None}
    done: set[str] = set()

    def visit(part: str, path: tuple[str, ...]) -> None:
        assert part not in path, f"cycle: {' -> '.join((*path, part))}"
        if part in done:
            return
        for other in graph.get(part, set()):
            visit(other, (*path, part))
        done.add(part)

    for part in graph:
        visit(part, ())


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    """The checker itself: imports inside functions count, and relative imports resolve to modules."""
    backends = _imports(PACKAGE / "backends" / "__init__.py")
    assert {"appliance.backends.triton", "appliance.backends.onnxruntime", "appliance.backends.tensorrt"} <= backends
    assert "appliance.core.datatypes" in _imports(PACKAGE / "core" / "model.py")
    assert "appliance" in _imports(PACKAGE / "rest" / "app.py")
    assert "appliance.optimize.engine" in _imports(PACKAGE / "optimize" / "builder.py")
