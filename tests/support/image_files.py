"""The image's configuration files rendered the way their recipes render them, and the real host tools that check
them (nginx, nft, visudo/sudo, sshd, openssl). ``scripts/setup.sh test`` installs Debian's packages of those tools
when run as root; without them these tests fail and say so rather than skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str, package: str) -> str:
    """The path of ``name``; an AssertionError that says how to get it when it is not installed."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")  # sshd, visudo: not on a user's PATH
    if found:
        return found
    raise AssertionError(
        f"{name} is not installed, and this test checks the image's files with the real one: install Debian's "
        f"'{package}' package (scripts/setup.sh test does, as root)"
    )


CLASSES = Path(__file__).resolve().parents[2] / "meta-inference" / "classes-recipe"


def weak_defaults(recipe: Path) -> dict[str, str]:
    """A recipe's ``NAME ??= "value"`` defaults, with those of the layer's classes it inherits (the recipe's
    own win, as they are parsed after its ``inherit``)."""
    text = recipe.read_text()
    found: dict[str, str] = {}
    for inherit in re.findall(r"^inherit (.+)$", text, re.MULTILINE):
        for name in inherit.split():
            bbclass = CLASSES / f"{name}.bbclass"
            if bbclass.is_file():
                found.update(re.findall(r'^([A-Z_]+) \?\?= "([^"]*)"$', bbclass.read_text(), re.MULTILINE))
    found.update(re.findall(r'^([A-Z_]+) \?\?= "([^"]*)"$', text, re.MULTILINE))
    return found


def recipe_seds(recipe: Path, template: str) -> dict[str, str]:
    """The ``-e 's,@X@,${VAR},g'`` pairs of the recipe's sed command that renders ``template`` (placeholder ->
    variable), so a test renders with what the recipe really substitutes."""
    text = recipe.read_text()
    seds: dict[str, str] = {}
    for command in re.findall(r"sed((?:\s+-e '[^']*' \\\n)*\s+-e '[^']*' \\\n\s+\$\{S\}/(\S+))", text):
        if command[1] != template:
            continue
        for placeholder, variable in re.findall(r"s,@([A-Z_]+)@,\$\{([A-Za-z_]+)\},g", command[0]):
            seds[placeholder] = variable
    assert seds, f"{recipe.name} renders no placeholder of {template}"
    return seds


def render(recipe: Path, template: str, variables: dict[str, str]) -> str:
    """``template`` (in the recipe's files/) with each placeholder replaced as the recipe's sed does, from
    ``variables`` (the recipe's weak defaults and BitBake's paths, as the test gives them)."""
    text = (recipe.parent / "files" / template).read_text()
    for placeholder, variable in recipe_seds(recipe, template).items():
        assert variable in variables, f"the test does not know {variable} (used for @{placeholder}@)"
        text = text.replace(f"@{placeholder}@", variables[variable])
    left = set(re.findall(r"@([A-Z_]+)@", text))
    assert not left, f"{template}: placeholders the recipe does not render: {left}"
    return text


# BitBake's paths on the image (a systemd, usrmerge distro).
PATHS = {
    "bindir": "/usr/bin",
    "sbindir": "/usr/sbin",
    "base_bindir": "/usr/bin",
    "sysconfdir": "/etc",
}


def in_private_mounts(script: str) -> list[str]:
    """A command line running ``script`` (sh) in a mount namespace of its own, so what it mounts stays there.
    ``unshare --mount`` makes every mount private first, which fails where ``/`` is not a mount point (a chroot,
    such as a fresh root): there the mounts are those of the namespace the chroot runs in, and they are kept
    unchanged (a test that mounts then checks that nothing leaked, see :func:`assert_unchanged`)."""
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode == 0:
        return ["unshare", "--mount", "sh", "-c", script]
    return ["unshare", "--mount", "--propagation", "unchanged", "sh", "-c", script]


def assert_unchanged(path: Path, before: bytes) -> None:
    """After a command that bound something over ``path`` in its own namespace: this namespace still sees the
    file as it was (nothing propagated back)."""
    assert path.read_bytes() == before, f"a mount over {path} leaked out of its namespace"
