"""API keys through the admin API (``/v2/keys``), as the admin panel and scripts manage them: list (never the
hashes), create (shown once, usable at once), revoke (refused at once), each audited; bad input names the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.autoscaler import create_key

VECTOR = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [0.1] * 64}]}


def test_create_use_list_and_revoke(tmp_path: Path, demo_repo: Path, server_factory: Any) -> None:
    keys_file, audit = tmp_path / "keys.json", tmp_path / "audit.jsonl"
    admin, read = create_key(keys_file, "admin"), create_key(keys_file, "read")
    server = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys_file), "--audit-log-file", str(audit))
    with httpx.Client(base_url=server.base, timeout=30, headers={"Authorization": f"Bearer {admin}"}) as client:
        made = client.put("/v2/keys/camera-1", json={"role": "infer", "expires": "90d", "rate": 50, "burst": 100})
        assert made.status_code == 201, made.text
        doc = made.json()
        assert (doc["name"], doc["role"], doc["note"]) == ("camera-1", "infer", "the key is shown only in this answer")
        camera = {"Authorization": f"Bearer {doc['key']}"}
        # usable at once, with no wait for the service's next look at the key file
        assert httpx.post(f"{server.base}/v2/models/mlp/infer", json=VECTOR, headers=camera).status_code == 200
        listed = client.get("/v2/keys").json()["keys"]
        assert [k["name"] for k in listed] == ["admin", "read", "camera-1"]
        camera_entry = listed[-1]
        assert camera_entry["role"] == "infer" and camera_entry["rate"] == 50 and camera_entry["burst"] == 100
        assert camera_entry["expires"] and camera_entry["revoked"] is None
        assert not any("hash" in k or "salt" in k for k in listed)
        assert doc["key"] not in json.dumps(listed)

        assert client.delete("/v2/keys/camera-1").json() == {"revoked": ["camera-1"]}
        refused = httpx.post(f"{server.base}/v2/models/mlp/infer", json=VECTOR, headers=camera)
        assert refused.status_code == 401  # at once
        gone = client.delete("/v2/keys/camera-1")
        assert (gone.status_code, gone.json()) == (
            404,
            {"error": "no key named 'camera-1' that is not revoked already"},
        )

        as_read = {"Authorization": f"Bearer {read}"}
        assert client.put("/v2/keys/sneaky", json={"role": "admin"}, headers=as_read).status_code == 403
        assert client.get("/v2/keys", headers=as_read).status_code == 403
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    done = [(e["action"], e["target"], e["result"]) for e in entries if e["action"] in ("key_create", "key_revoke")]
    assert ("key_create", "camera-1", "ok") in done and ("key_revoke", "camera-1", "ok") in done
    sneaky = [e for e in entries if e["target"] == "sneaky"]
    assert [(e["key"], e["action"]) for e in sneaky] == [("read", "key_create")]
    assert sneaky[0]["result"].startswith("denied")


@pytest.mark.parametrize(
    ("name", "body", "message"),
    [
        ("k1", {"role": "root"}, "'role' must be one of read, infer, admin, got 'root'"),
        ("k1", {}, "'role' must be one of read, infer, admin"),
        ("k1", {"role": "infer", "expires": "soon"}, "'expires': 'soon' is not a duration"),
        ("k1", {"role": "infer", "rate": -1}, "'rate' must be requests per second above 0"),
        ("k1", {"role": "infer", "burst": 0}, "'burst' must be a whole number from 1"),
        ("k1", {"role": "infer", "colour": "red"}, "'colour' is not a field of a key"),
        ("admin", {"role": "infer"}, "a key named 'admin' exists (revoke it first)"),
        ("bad name!", {"role": "infer"}, "key name 'bad name!': use 1-64 letters, digits"),
    ],
)
def test_bad_keys_name_the_field(
    tmp_path: Path, demo_repo: Path, server_factory: Any, name: str, body: dict[str, Any], message: str
) -> None:
    keys_file = tmp_path / "keys.json"
    admin = create_key(keys_file, "admin")
    server = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys_file))
    response = httpx.put(
        f"{server.base}/v2/keys/{name}", json=body, headers={"Authorization": f"Bearer {admin}"}, timeout=30
    )
    assert response.status_code == 400 and response.json()["error"].startswith(message), response.text


def test_no_keys_with_auth_off(demo_repo: Path, server_factory: Any) -> None:
    server = server_factory(demo_repo)
    response = httpx.get(f"{server.base}/v2/keys", timeout=30)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "there are no API keys with auth off (--auth true turns it on)"},
    )
