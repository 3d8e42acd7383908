"""JWT bearer tokens: on a real server (``--auth true`` with RSA PEM and EC JWKS keys), with real ``tritonclient``
on both transports, a table of forged tokens that must all get the API keys' one 401; roles from the claim; the
subject in the audit log. Then the verifier itself: leeway, the cache, key files changing under it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tritonclient.utils import InferenceServerException

from appliance.core.auth.authenticator import INVALID_CREDENTIALS
from appliance.core.auth.guard import Guard
from appliance.core.auth.jwt_tokens import JwtKeyError, JwtVerifier, KeyFile, parse_jwks, parse_pem, role_of
from appliance.core.auth.roles import Operation, Peer, Role
from appliance.core.errors import PermissionDenied, Unauthenticated
from appliance.settings import Settings, SettingsError, load_settings
from tests.support.appliance import ServerProcess, running_server

AUDIENCE, ISSUER = "appliance", "https://idp.example"
LOCAL = Peer("127.0.0.1:5000", True)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "camera-7", "role": "infer", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 600}
    base["nbf"] = now - 10
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token PyJWT would refuse to make: ``alg: none``, or HS256 with a public key's bytes as the secret."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@dataclass
class Env:
    server: ServerProcess
    rsa: rsa.RSAPrivateKey  # its public key is a PEM file: no kid
    ec: ec.EllipticCurvePrivateKey  # its public key is in the JWKS, kid "ec-1"
    rsa_pem: bytes

    def token(self, **changes: Any) -> str:
        return jwt.encode(claims(**changes), self.rsa, algorithm="RS256")

    def ec_token(self, kid: str = "ec-1", **changes: Any) -> str:
        return jwt.encode(claims(**changes), self.ec, algorithm="ES256", headers={"kid": kid})


def jwks(key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return json.dumps({"keys": [{**entry, "kid": kid, "use": "sig"}]})


@pytest.fixture(scope="module")
def env(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("jwt")
    signer, ec_signer = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    (root / "rsa.pem").write_bytes(public_pem(signer))
    (root / "jwks.json").write_text(jwks(ec_signer, "ec-1"))
    flags = ["--auth", "true", "--keys-file", str(root / "keys.json"), "--audit-log-file", str(root / "audit.jsonl")]
    flags += ["--jwt-public-key", str(root / "rsa.pem"), "--jwt-jwks-file", str(root / "jwks.json")]
    flags += ["--jwt-audience", AUDIENCE, "--jwt-issuer", ISSUER, "--log-level", "info"]
    flags += ["--model-control-mode", "explicit", "--load-model", "*"]
    with running_server(demo_repo, root / "server.log", *flags) as server:
        yield Env(server, signer, ec_signer, public_pem(signer))


def _inputs(lib: Any) -> list[Any]:
    inp = lib.InferInput("input", [1, 64], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 64), np.float32))
    return [inp]


def _forged(env: Env) -> list[tuple[str, str]]:
    now = int(time.time())
    other = rsa_key()
    head, _, signature = env.token().split(".")
    return [
        ("expired", env.token(exp=now - 3600, nbf=now - 7200)),
        ("not yet valid", env.token(nbf=now + 3600)),
        ("signed by another key", jwt.encode(claims(), other, algorithm="RS256")),
        ("wrong audience", env.token(aud="someone-else")),
        ("no audience", env.token(aud=None)),
        ("wrong issuer", env.token(iss="https://evil.example")),
        ("no exp", env.token(exp=None)),
        ("no sub", env.token(sub=None)),
        ("alg none", hand_signed({"alg": "none", "typ": "JWT"}, claims(role="admin"), None)),
        ("HS256 with the public key", hand_signed({"alg": "HS256", "typ": "JWT"}, claims(), env.rsa_pem)),
        ("unknown kid", env.ec_token(kid="nosuch")),
        ("EC key, RS256 header", hand_signed({"alg": "RS256", "kid": "ec-1"}, claims(), None)),
        ("HS256 not allowed", jwt.encode(claims(), "s" * 32, algorithm="HS256")),
        ("garbage", "eyJhbGciOiJSUzI1NiJ9.garbage.garbage"),
        ("three dots of nothing", ".."),
        ("tampered payload", f"{head}.{b64(json.dumps(claims(role='admin')).encode())}.{signature}"),
    ]


def test_forged_tokens_get_the_one_401_on_both_transports(env: Env):
    texts = set()
    for why, token in _forged(env):
        answer = httpx.get(f"{env.server.base}/v2/models/mlp", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 401, (why, answer.text)
        texts.add(answer.text)
        with pytest.raises(InferenceServerException) as info:
            env.server.grpc().get_model_metadata("mlp", headers={"authorization": f"Bearer {token}"})
        assert info.value.status() == "StatusCode.UNAUTHENTICATED", why
        texts.add(f'{{"error":"{info.value.message()}"}}')
    assert texts == {f'{{"error":"{INVALID_CREDENTIALS}"}}'}
    # The server says why, in its log, never to the client.
    log = env.server.log()
    reasons = ["expired at", "not valid before", "no key for alg 'none'", "kid 'nosuch'", "Invalid issuer"]
    for reason in [*reasons, "Audience doesn't match"]:
        assert reason in log, reason


def test_valid_tokens_infer_on_both_transports_with_rsa_and_jwks_keys(env: Env):
    for token in (env.token(), env.ec_token(), env.token(role=["read", "infer"]), env.token(aud=[AUDIENCE, "x"])):
        result = env.server.http().infer("mlp", _inputs(httpclient), headers={"Authorization": f"Bearer {token}"})
        assert result.as_numpy("logits").shape == (1, 10)
        result = env.server.grpc().infer("mlp", _inputs(grpcclient), headers={"authorization": f"Bearer {token}"})
        assert result.as_numpy("logits").shape == (1, 10)


@pytest.mark.parametrize("role", [None, "superuser", 7, [], ["guest"], "read"])
def test_valid_token_without_the_role_gets_403_on_both_transports(env: Env, role: Any):
    token = env.token(role=role)
    with pytest.raises(InferenceServerException) as info:
        env.server.http().infer("mlp", _inputs(httpclient), headers={"Authorization": f"Bearer {token}"})
    assert str(info.value.status()) == "403" and "needs role infer" in str(info.value.message())
    with pytest.raises(InferenceServerException) as info:
        env.server.grpc().infer("mlp", _inputs(grpcclient), headers={"authorization": f"Bearer {token}"})
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    metadata = httpx.get(f"{env.server.base}/v2/models/mlp", headers={"Authorization": f"Bearer {token}"})
    assert metadata.status_code == (200 if role == "read" else 403), metadata.text


def test_admin_token_loads_and_unloads_and_its_subject_is_in_the_audit_log(env: Env):
    admin = {"Authorization": f"Bearer {env.token(sub='ops-alice', role='admin')}"}
    env.server.http().unload_model("mlp", headers=admin)
    env.server.http().load_model("mlp", headers=admin)
    env.server.grpc().unload_model("mlp", headers={k.lower(): v for k, v in admin.items()})
    env.server.grpc().load_model("mlp", headers={k.lower(): v for k, v in admin.items()})
    infer_token = {"Authorization": f"Bearer {env.token(sub='camera-9')}"}
    assert httpx.post(f"{env.server.base}/v2/repository/models/mlp/unload", headers=infer_token).status_code == 403
    answer = httpx.get(f"{env.server.base}/v2/audit", headers=admin)
    assert answer.status_code == 200
    got = [(e["key"], e["action"], e["target"], e["result"].split(":")[0]) for e in answer.json()["entries"]]
    assert got[-5:] == [
        ("ops-alice", "repository_unload", "mlp", "ok"),
        ("ops-alice", "repository_load", "mlp", "ok"),
        ("ops-alice", "repository_unload", "mlp", "ok"),
        ("ops-alice", "repository_load", "mlp", "ok"),
        ("camera-9", "repository_unload", "mlp", "denied"),
    ]


def test_hs256_only_when_allowed(demo_repo: Path, tmp_path: Path, server_factory: Any):
    secret = tmp_path / "hs256.secret"
    secret.write_text("x" * 40 + "\n")
    server = server_factory(
        demo_repo, "--auth", "true", "--jwt-allow-hs256", "true", "--jwt-hs256-secret-file", str(secret)
    )
    token = jwt.encode(claims(aud=None, iss=None), "x" * 40, algorithm="HS256")
    assert httpx.get(f"{server.base}/v2/models/mlp", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    forged = jwt.encode(claims(aud=None, iss=None), "y" * 40, algorithm="HS256")
    assert httpx.get(f"{server.base}/v2/models/mlp", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def _serve(*flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "appliance.cli", "serve", "--auth", "true", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_bad_jwt_settings_stop_the_server_at_start_naming_the_setting_or_file(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("z" * 40)
    result = _serve("--jwt-hs256-secret-file", str(secret))
    assert result.returncode == 2 and "jwt_hs256_secret_file" in result.stderr and "jwt_allow_hs256" in result.stderr
    missing = tmp_path / "nosuch.pem"
    result = _serve("--jwt-public-key", str(missing))
    assert result.returncode == 2 and f"JWT key file {missing}: not found" in result.stderr
    result = _serve("--jwt-jwks-file", str(missing))
    assert result.returncode == 2 and "jwt_jwks_file" in result.stderr
    result = _serve("--jwt-leeway-s", "3600")
    assert result.returncode == 2 and "jwt_leeway_s" in result.stderr


# -- the verifier --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def signer() -> rsa.RSAPrivateKey:
    return rsa_key()


def verifier_for(path: Path, clock: Clock, leeway_s: float = 30.0) -> JwtVerifier:
    return JwtVerifier([KeyFile(path, parse_pem)], AUDIENCE, ISSUER, leeway_s, "role", clock)


def test_exp_and_nbf_with_leeway(tmp_path: Path, signer: rsa.RSAPrivateKey):
    (tmp_path / "k.pem").write_bytes(public_pem(signer))
    verifier = verifier_for(tmp_path / "k.pem", Clock(), leeway_s=30)
    token = jwt.encode(claims(exp=10_000, nbf=5_000), signer, algorithm="RS256")
    assert verifier.verify(token, 4_971.0) is not None  # nbf - 29 s
    verifier._cache.clear()
    with pytest.raises(Unauthenticated):
        verifier.verify(token, 4_969.0)  # nbf - 31 s
    assert verifier.verify(token, 10_029.0) is not None  # exp + 29 s
    with pytest.raises(Unauthenticated):
        verifier.verify(token, 10_031.0)  # exp + 31 s: also from the cache


def test_the_cache_answers_a_repeated_token_and_honours_exp(tmp_path: Path, signer: rsa.RSAPrivateKey):
    (tmp_path / "k.pem").write_bytes(public_pem(signer))
    verifier = verifier_for(tmp_path / "k.pem", Clock(), leeway_s=0)
    token = jwt.encode(claims(exp=10_000, nbf=None), signer, algorithm="RS256")
    principal = verifier.verify(token, 9_000.0)
    assert principal is not None and principal.name == "camera-7" and principal.role is Role.INFER
    assert len(verifier) == 1
    verifier._keys = ()  # no key could verify it now: the answer below is the cache's
    assert verifier.verify(token, 9_999.0) is principal
    with pytest.raises(Unauthenticated):
        verifier.verify(token, 10_000.0)
    assert len(verifier) == 0


def test_cache_is_bounded(tmp_path: Path, signer: rsa.RSAPrivateKey):
    (tmp_path / "k.pem").write_bytes(public_pem(signer))
    verifier = JwtVerifier([KeyFile(tmp_path / "k.pem", parse_pem)], AUDIENCE, ISSUER, 0, "role", Clock(), 3)
    for n in range(7):
        verifier.verify(jwt.encode(claims(exp=10_000, nbf=None, jti=str(n)), signer, algorithm="RS256"), 9_000.0)
        assert 1 <= len(verifier) <= 3


def test_key_file_reload_and_a_bad_file_keeps_the_last_good_keys(
    tmp_path: Path, signer: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
):
    path, clock = tmp_path / "k.pem", Clock()
    path.write_bytes(public_pem(signer))
    verifier = verifier_for(path, clock)
    old = jwt.encode(claims(exp=10_000, nbf=None), signer, algorithm="RS256")
    assert verifier.verify(old, 9_000.0) is not None
    with caplog.at_level(logging.ERROR):
        path.write_text("-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")
        clock.now += 1
        assert verifier.verify(old, 9_000.0) is not None
    assert f"JWT key file {path}: not a PEM public key" in caplog.text and "keeping the last good keys" in caplog.text
    rotated = rsa_key()
    path.write_bytes(public_pem(rotated))
    clock.now += 1
    with pytest.raises(Unauthenticated):
        verifier.verify(old, 9_000.0)  # the cache was emptied with the old key
    assert verifier.verify(jwt.encode(claims(exp=10_000, nbf=None), rotated, algorithm="RS256"), 9_000.0) is not None
    path.unlink()
    clock.now += 1
    with pytest.raises(Unauthenticated):
        verifier.verify(jwt.encode(claims(exp=10_000, nbf=None), rotated, algorithm="RS256"), 9_000.0)


def test_jwks_refuses_symmetric_private_and_mismatched_keys(tmp_path: Path):
    path = tmp_path / "jwks.json"
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwks(key, "a"))["keys"][0]
    private = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    for doc, message in (
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "kty 'oct'"),
        ({"keys": [private]}, "a private key"),
        ({"keys": [{**public, "alg": "RS256"}]}, "does not fit the key"),
        ({"keys": []}, "not a JWKS"),
        ({"nokeys": 1}, "not a JWKS"),
    ):
        with pytest.raises(JwtKeyError, match=message):
            parse_jwks(json.dumps(doc).encode(), path)
    with pytest.raises(JwtKeyError, match="line 1"):
        parse_jwks(b"{oops", path)
    assert parse_jwks(json.dumps({"keys": [public]}).encode(), path)[0].algorithms == ("ES256",)
    with pytest.raises(JwtKeyError, match="at least 2048"):
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        parse_pem(public_pem(small), path)


def test_role_claim():
    assert role_of("admin") is Role.ADMIN and role_of("READ") is Role.READ
    assert role_of(["read", "admin", "nosuch"]) is Role.ADMIN
    assert role_of(None) is None and role_of("root") is None and role_of(["x", 3]) is None and role_of(3) is None


def test_guard_with_jwt(tmp_path: Path, signer: rsa.RSAPrivateKey):
    (tmp_path / "k.pem").write_bytes(public_pem(signer))
    token = jwt.encode(claims(role="read", aud=None, iss=None), signer, algorithm="RS256")
    plain = Guard(Settings(keys_file=tmp_path / "keys.json"))
    assert plain.jwt is None
    with pytest.raises(Unauthenticated, match=INVALID_CREDENTIALS):
        plain.admit(f"Bearer {token}", LOCAL, Operation.MODEL_METADATA)
    guard = Guard(Settings(keys_file=tmp_path / "keys.json", jwt_public_keys=[tmp_path / "k.pem"]))
    assert guard.admit(f"Bearer {token}", LOCAL, Operation.MODEL_METADATA).name == "camera-7"
    with pytest.raises(PermissionDenied):
        guard.admit(f"Bearer {token}", LOCAL, Operation.INFER)


def test_settings_validate_jwt_files(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("s" * 40)
    with pytest.raises(SettingsError, match="jwt_hs256_secret_file: an HS256 secret file needs jwt_allow_hs256"):
        load_settings(jwt_hs256_secret_file=secret)
    assert load_settings(jwt_hs256_secret_file=secret, jwt_allow_hs256=True).jwt_hs256_secret_file == secret
    with pytest.raises(SettingsError, match=f"jwt_public_keys: .*JWT key file {tmp_path / 'x.pem'}: not found"):
        load_settings(jwt_public_keys=[tmp_path / "x.pem"])
