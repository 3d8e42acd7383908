"""The admin panel's door, on a real server with auth on: login with a key into a session cookie, the cookie's
attributes, the CSRF token every change needs, read-only for a read key, security headers, logout, expiry, and
what is refused (no login, a forged cookie, a change without the token, a revoked key)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.autoscaler import APPLIANCE, create_key


@pytest.fixture
def panel(demo_repo: Path, server_factory: Any, tmp_path: Path) -> dict[str, Any]:
    keys = tmp_path / "keys.json"
    admin, read, infer = create_key(keys, "admin"), create_key(keys, "read"), create_key(keys, "infer")
    server = server_factory(
        demo_repo, "--auth", "true", "--keys-file", str(keys), "--model-control-mode", "explicit", "--load-model", "*",
        env={"APPLIANCE_AUDIT_LOG_FILE": str(tmp_path / "audit.log")},
    )  # fmt: skip
    return {"server": server, "admin": admin, "read": read, "infer": infer, "keys": keys}


def login(panel: dict[str, Any], key: str, **headers: str) -> httpx.Client:
    client = httpx.Client(base_url=panel["server"].base, timeout=30, headers=headers)
    r = client.post("/admin/login", data={"key": key})
    assert r.status_code == 303 and r.headers["location"] == "/admin", r.text
    return client


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/admin").text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_no_login_no_panel(panel: dict[str, Any]) -> None:
    base = panel["server"].base
    r = httpx.get(f"{base}/admin")
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    assert httpx.get(f"{base}/admin/models").status_code == 303
    assert httpx.get(f"{base}/admin/login").status_code == 200
    assert httpx.post(f"{base}/v2/repository/models/mlp/unload", json={}).status_code == 401


def test_a_bad_key_is_refused_and_audited(panel: dict[str, Any]) -> None:
    client = httpx.Client(base_url=panel["server"].base)
    r = client.post("/admin/login", data={"key": "not-a-key"})
    assert (
        r.status_code == 401
        and "That key is not valid" in r.text
        and "appliance_session" not in r.headers.get("set-cookie", "")
    )
    audit = httpx.get(f"{panel['server'].base}/v2/audit", headers={"Authorization": f"Bearer {panel['admin']}"})
    assert any(e["action"] == "panel_login" and e["result"].startswith("refused") for e in audit.json()["entries"])


def test_the_session_cookie_and_the_page_headers(panel: dict[str, Any]) -> None:
    client = httpx.Client(base_url=panel["server"].base)
    r = client.post("/admin/login", data={"key": panel["admin"]})
    cookie = r.headers["set-cookie"]
    assert (
        "appliance_session=" in cookie
        and "HttpOnly" in cookie
        and "SameSite=strict" in cookie.replace("Strict", "strict")
    )
    assert "Path=/" in cookie and "Secure" not in cookie  # plain HTTP on loopback in this test
    page = client.get("/admin")
    assert page.status_code == 200 and "admin: admin" in page.text
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text and "onclick" not in page.text
    # Behind nginx (X-Forwarded-Proto https from loopback) the cookie is Secure.
    behind_tls = httpx.post(f"{panel['server'].base}/admin/login", data={"key": panel["admin"]},
                            headers={"X-Forwarded-Proto": "https"})  # fmt: skip
    assert "Secure" in behind_tls.headers["set-cookie"]
    for name, kind in (("panel.js", "text/javascript"), ("panel.css", "text/css")):
        asset = client.get(f"/admin/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    assert client.get("/admin/static/../settings.py").status_code == 404


def test_a_change_needs_the_csrf_token(panel: dict[str, Any]) -> None:
    client = login(panel, panel["admin"])
    token = csrf_of(client)
    refused = client.post("/v2/repository/models/mlp/unload", json={})
    assert refused.status_code == 403 and "CSRF token" in refused.json()["error"]
    wrong = client.post("/v2/repository/models/mlp/unload", json={}, headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status_code == 403
    assert client.post("/v2/repository/index", json={}, headers={"X-CSRF-Token": token}).status_code == 200
    done = client.post("/v2/repository/models/mlp/unload", json={}, headers={"X-CSRF-Token": token})
    assert done.status_code == 200, done.text
    assert client.post("/v2/repository/models/mlp/load", json={}, headers={"X-CSRF-Token": token}).status_code == 200
    assert client.get("/v2/update").status_code == 200  # reading needs no token
    audit = client.get("/v2/audit").json()["entries"]
    assert [e["action"] for e in audit if e["key"] == "admin"][-2:] == ["repository_unload", "repository_load"]


def test_a_read_key_sees_the_panel_read_only(panel: dict[str, Any]) -> None:
    client = login(panel, panel["read"])
    assert "read (read only)" in client.get("/admin").text
    token = csrf_of(client)
    denied = client.post("/v2/repository/models/mlp/unload", json={}, headers={"X-CSRF-Token": token})
    assert denied.status_code == 403 and "needs role admin" in denied.json()["error"]


def test_a_forged_cookie_and_a_revoked_key_end_the_session(panel: dict[str, Any]) -> None:
    base = panel["server"].base
    forged = httpx.Client(base_url=base, cookies={"appliance_session": "A" * 43})
    assert forged.get("/admin").status_code == 303
    assert forged.get("/v2/update").status_code == 401
    client = login(panel, panel["admin"])
    assert client.get("/v2/update").status_code == 200
    subprocess.run([*APPLIANCE, "keys", "revoke", "--keys-file", str(panel["keys"]), "admin"], check=True, timeout=60)
    time.sleep(1.0)  # the server rereads the key file at most every half second
    assert client.get("/v2/update").status_code == 401
    assert client.get("/admin").status_code == 303


def test_logout_ends_the_session(panel: dict[str, Any]) -> None:
    client = login(panel, panel["admin"])
    token = csrf_of(client)
    assert client.post("/admin/logout", data={"csrf": "wrong"}).status_code == 303
    assert client.get("/admin").status_code == 200  # a logout without the token does nothing
    out = client.post("/admin/logout", data={"csrf": token})
    assert out.status_code == 303 and 'appliance_session=""' in out.headers["set-cookie"]
    client.cookies.clear()
    assert client.get("/admin").status_code == 303


def test_an_idle_session_expires(demo_repo: Path, server_factory: Any, tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    admin = create_key(keys, "admin")
    server = server_factory(demo_repo, "--auth", "true", "--keys-file", str(keys),
                            env={"APPLIANCE_PANEL_SESSION_IDLE_S": "1"})  # fmt: skip
    client = login({"server": server}, admin)
    assert client.get("/admin").status_code == 200
    time.sleep(1.5)
    assert client.get("/admin").status_code == 303 and client.get("/v2/update").status_code == 401
