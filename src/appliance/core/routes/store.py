"""The routes file: every accepted declaration and canary state, kept so that a restart or a power cut loses
nothing that was accepted.

One JSON document, ``{"routes": {"<name>": {<declaration>, "state": {...}}}}``, written whole on every change:
to a temporary file beside it, flushed and fsynced, renamed over the old one, and the folder fsynced, so the
file is always either the old or the new state, never half of one. Reading it back names the file and the line
of what is wrong; a route that is wrong is left out and the others are kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import write_atomically

FORMAT = 1


@dataclass(frozen=True, slots=True)
class StoredRoute:
    name: str
    declaration: dict[str, Any]
    state: dict[str, Any] | None
    line: int  # where the route starts in the file, for errors about it


class RoutesFileError(ValueError):
    """The whole file cannot be read; the message names the file and, where there is one, the line."""


def read_routes(path: Path) -> list[StoredRoute]:
    """The routes kept in ``path``; [] when it does not exist. RoutesFileError when it is not a routes file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutesFileError(f"routes file {path}: cannot be read: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RoutesFileError(f"routes file {path} line {exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("routes"), dict):
        raise RoutesFileError(f'routes file {path} line 1: expected {{"routes": {{"<name>": {{...}}}}}}')
    routes = []
    for name, entry in doc["routes"].items():
        line = _line_of(text, name)
        if not isinstance(entry, dict):
            raise RoutesFileError(f"routes file {path} line {line}: route '{name}' must be an object")
        declaration = {k: v for k, v in entry.items() if k != "state"}
        state = entry.get("state")
        routes.append(StoredRoute(name, declaration, state if isinstance(state, dict) else None, line))
    return routes


def _line_of(text: str, name: str) -> int:
    """The line where the key ``"name":`` first appears (1 when it cannot be found)."""
    match = re.search(re.escape(json.dumps(name)) + r"\s*:", text)
    return text.count("\n", 0, match.start()) + 1 if match else 1


def write_routes(path: Path, routes: dict[str, dict[str, Any]]) -> None:
    """Replace the file with ``routes`` (name: declaration with its state), atomically and durably."""
    body = json.dumps({"format": FORMAT, "routes": routes}, indent=2, sort_keys=False) + "\n"
    write_atomically(path, body)
