"""Fixtures: model repositories, the real server as a subprocess, and the logs of failing tests' servers.

Servers bind port 0 on loopback and report the ports they got in their "appliance ready" log line. Each server
collects its log in a file; a failing test gets the logs of every server it used in its report. The helpers
behind these fixtures are in ``tests/support``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.demo import write_demo_repository
from tests.support import models
from tests.support.appliance import ServerProcess, live_servers, running_server
from tests.support.models import ModelsRepo


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for server in live_servers:
            tail = server.log()[-4000:]
            report.sections.append((f"appliance log ({server.log_path.name})", tail))
    return report


# -- repositories --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "repo"
    write_demo_repository(root)
    return root


@pytest.fixture(scope="session")
def models_repo(tmp_path_factory: pytest.TempPathFactory) -> ModelsRepo:
    """Every datatype (batched and not), reshape, versions, autocomplete, a Triton-style folder and a
    broken model, in one repository."""
    root = tmp_path_factory.mktemp("models") / "repo"
    root.mkdir()
    files: dict[str, bytes] = {}
    for datatype in models.DATATYPES:
        for batched in (True, False):
            name = models.write_identity(root, datatype, batched)
            files[name] = models.identity_model(datatype)
    files["reshape"] = models.write_reshape(root)
    files["triton_onnx"] = models.write_triton_style(root)
    for name, policy in (
        ("versions_all", "{ all: { } }"),
        ("versions_specific", "{ specific: { versions: [ 1, 3 ] } }"),
        ("versions_latest", "{ latest: { num_versions: 2 } }"),
        ("versions_default", None),
    ):
        written = models.write_versioned(root, name, policy or "{ latest: { num_versions: 1 } }")
        if policy is None:
            text = (root / name / "config.pbtxt").read_text()
            (root / name / "config.pbtxt").write_text(re.sub(r"version_policy:.*\n", "", text))
        for version, data in written.items():
            files[f"{name}/{version}"] = data
    files["autocomplete"] = models.write_configless(root)
    models.write_broken(root)
    return ModelsRepo(root, files)


# -- servers -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_server(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "demo-server.log"
    with running_server(demo_repo, log, "--max-request-bytes", str(4 * 1024 * 1024)) as server:
        yield server


@pytest.fixture(scope="session")
def models_server(models_repo: ModelsRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "models-server.log"
    with running_server(models_repo.root, log) as server:
        yield server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start servers for one test: ``server_factory(repo, *flags)``; all are killed at teardown."""
    stack = contextlib.ExitStack()
    count = 0

    def start(repo: Path, *extra: str, env: dict[str, str] | None = None) -> ServerProcess:
        nonlocal count
        count += 1
        return stack.enter_context(running_server(repo, tmp_path / f"server-{count}.log", *extra, env=env))

    with stack:
        yield start
