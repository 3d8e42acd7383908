"""The support bundle a field engineer downloads (``GET /v2/support/bundle``) and the effective settings
(``GET /v2/settings``): from a real server with auth on, a TensorRT engine manifest in the repository and a FAKE
AGX Orin tree; what the archive holds, that no secret is in it, and who may have it."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import httpx

from appliance.settings import Settings
from tests.support.autoscaler import create_key
from tests.support.fake_jetson_sysfs import AGX_ORIN, write_fake_jetson


def test_the_bundle_holds_what_support_needs_and_no_secret(
    tmp_path: Path, demo_repo: Path, server_factory: Any
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(demo_repo, repo)
    (repo / "mlp" / "1" / "model.plan.json").write_text('{"tensorrt_version": "10.3.0", "precision": "fp16"}')
    keys_file, audit = tmp_path / "keys.json", tmp_path / "audit.jsonl"
    admin, read = create_key(keys_file, "admin"), create_key(keys_file, "read")
    secret = tmp_path / "jwt.secret"
    secret.write_text("hs256-shared-secret-that-must-not-leave-the-device")
    device = write_fake_jetson(tmp_path / "FAKE-agx-orin", AGX_ORIN)
    server = server_factory(
        repo,
        *("--auth", "true", "--keys-file", str(keys_file), "--audit-log-file", str(audit)),
        *("--jwt-allow-hs256", "true", "--jwt-hs256-secret-file", str(secret)),
        *("--device-telemetry", "true", "--device-root", str(device), "--build-id", "abc1234"),
    )
    as_admin = {"Authorization": f"Bearer {admin}"}
    with httpx.Client(base_url=server.base, timeout=60, headers=as_admin) as client:
        vector = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}]}
        assert client.post("/v2/models/mlp/infer", json=vector).status_code == 200
        assert client.post("/v2/repository/models/cnn/park").status_code == 200
        response = client.get("/v2/support/bundle")
        assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
        disposition = response.headers["content-disposition"]
        assert disposition.startswith('attachment; filename="appliance-support-abc1234-') and disposition.endswith(
            '.tar.gz"'
        )
        # a read key may look at neither; nor may anyone without a key
        as_read = {"Authorization": f"Bearer {read}"}
        assert client.get("/v2/support/bundle", headers=as_read).status_code == 403
        assert client.get("/v2/settings", headers=as_read).status_code == 403
        assert httpx.get(f"{server.base}/v2/support/bundle", timeout=30).status_code == 401
        settings = client.get("/v2/settings").json()

    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        files = {m.name.removeprefix("appliance-support/"): tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert {
        "settings.json",
        "server.json",
        "statistics.json",
        "routes.json",
        "autoscaler.json",
        "history.json",
        "events.json",
        "audit.json",
        "device.json",
        "logs/service.log",
        "repository/index.json",
        "repository/mlp/config.pbtxt",
        "repository/cnn/config.pbtxt",
        "repository/mlp/1/model.plan.json",
    } <= set(files)
    assert json.loads(files["settings.json"]) == settings and settings["keys_file"] == str(keys_file)
    assert json.loads(files["server.json"])["version"].endswith("+abc1234")
    assert json.loads(files["device.json"])["model"] == AGX_ORIN.model
    assert json.loads(files["repository/mlp/1/model.plan.json"])["precision"] == "fp16"
    assert [e["kind"] for e in json.loads(files["events.json"])["events"] if e["model"] == "cnn"] == ["load", "park"]
    assert any(e["action"] == "model_park" for e in json.loads(files["audit.json"])["entries"])
    assert b"model 'cnn' parked" in files["logs/service.log"]
    everything = b"\n".join(files.values())
    for secret_text in (admin, read, secret.read_text()):
        assert secret_text.encode() not in everything
    assert keys_file.read_bytes() not in everything  # the key hashes stay on the device too


def test_settings_mask_the_redis_password() -> None:
    settings = Settings(cache_config="redis,host=cache.plant,port=6380,user=app,password=hunter2")
    assert settings.effective()["cache_config"] == "redis,host=cache.plant,port=6380,user=app,password=***"
    assert "hunter2" not in json.dumps(settings.effective())
