"""JSON Web Tokens: the second credential verifier, tried after the API keys.

A token is accepted only when it is signed by a configured key with an algorithm that key's type allows:

- RSA public keys (PEM): RS256, RS384, RS512; EC public keys (PEM): ES256 (P-256), ES384 (P-384), ES512 (P-521);
- the keys of a JWKS file (``{"keys": [...]}``), chosen by the token's ``kid``; a key with an ``alg`` is used
  with that algorithm only. Symmetric (``oct``) keys are refused in a JWKS;
- HS256 with a shared secret from a file, only with ``jwt_allow_hs256``.

The list of algorithms handed to PyJWT always comes from the key, never from the token's header, so ``alg:
none`` and algorithm confusion (an HS256 token "signed" with a public key's bytes) find no key. A PEM key has no
``kid`` and is tried for any token whose algorithm it allows; a JWKS key with a ``kid`` only for tokens naming it.

Claims: ``exp`` and ``sub`` are required (a token without an expiry would be valid forever: refused); ``exp`` and
``nbf`` are checked against the request's time with ``jwt_leeway_s`` either way; ``aud`` and ``iss`` must match
``jwt_audience`` / ``jwt_issuer`` when set (a token with an ``aud`` is refused when no audience is set). The role
is ``jwt_role_claim``: a role name, or a list of them (the highest known one counts); none known: the principal
has no role and is refused every operation (403), as a valid credential without the permission.

Verified tokens are cached (at most :data:`CACHE_SIZE`, cleared when full or when a key file changes) until
their ``exp`` (plus leeway), so a repeated token costs a dict lookup. Key files are followed like the API key
file: at most every :data:`~.authenticator.KEY_FILE_CHECK_S`, one ``stat`` each; a file that does not parse is
logged (file and what is wrong) and its last good keys stay; a removed file has no keys.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ...settings import Settings
from ..errors import Unauthenticated
from .authenticator import INVALID_CREDENTIALS, KEY_FILE_CHECK_S
from .roles import CredentialKind, Principal, Role

log = logging.getLogger(__name__)

#: Verified tokens kept; the cache is emptied when it is full.
CACHE_SIZE = 4096
#: Longer tokens are refused before any parsing.
MAX_TOKEN_BYTES = 8192
#: An HS256 secret shorter than this is refused (RFC 7518: at least the hash's size).
MIN_SECRET_BYTES = 32

RSA_ALGORITHMS = ("RS256", "RS384", "RS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class JwtKeyError(ValueError):
    """A key file cannot be read or holds no usable key; the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One key a token may be signed with, and the algorithms it may be used with."""

    key: Any  # a cryptography public key, or the HS256 secret's bytes
    algorithms: tuple[str, ...]
    kid: str | None  # None: any kid (PEM keys, the HS256 secret, a JWKS key without one)
    source: Path


def _algorithms(key: Any, path: Path, where: str = "") -> tuple[str, ...]:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise JwtKeyError(f"JWT key file {path}{where}: RSA key of {key.key_size} bits (at least 2048)")
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = EC_ALGORITHMS.get(key.curve.name)
        if alg is None:
            raise JwtKeyError(f"JWT key file {path}{where}: EC curve {key.curve.name} (P-256, P-384 or P-521)")
        return (alg,)
    raise JwtKeyError(f"JWT key file {path}{where}: not an RSA or EC public key ({type(key).__name__})")


def parse_pem(data: bytes, path: Path) -> list[VerificationKey]:
    """The public key of a PEM file (``-----BEGIN PUBLIC KEY-----``)."""
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise JwtKeyError(f"JWT key file {path}: not a PEM public key ({exc})") from None
    return [VerificationKey(key, _algorithms(key, path), None, path)]


def parse_jwks(data: bytes, path: Path) -> list[VerificationKey]:
    """The keys of a JWKS file; any key that is not a usable public key makes the whole file invalid."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise JwtKeyError(f"JWT key file {path}{f', line {line}' if line else ''}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list) or not doc["keys"]:
        raise JwtKeyError(f'JWT key file {path}: not a JWKS (expected {{"keys": [...]}} with at least one key)')
    keys = []
    for index, entry in enumerate(doc["keys"]):
        kid = entry.get("kid") if isinstance(entry, dict) else None
        where = f", key {index}" + (f" (kid '{kid}')" if kid else "")
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC"):
            kty = entry.get("kty") if isinstance(entry, dict) else None
            raise JwtKeyError(f"JWT key file {path}{where}: kty {kty!r}: only RSA and EC public keys are accepted")
        if "d" in entry:
            raise JwtKeyError(f"JWT key file {path}{where}: a private key; publish the public part only")
        try:
            key = jwt.PyJWK({k: v for k, v in entry.items() if k != "alg"}).key  # the key decides; alg below
        except (jwt.PyJWTError, ValueError, KeyError, TypeError) as exc:
            raise JwtKeyError(f"JWT key file {path}{where}: {exc}") from None
        algorithms = _algorithms(key, path, where)
        alg = entry.get("alg")
        if alg is not None:
            if alg not in algorithms:
                raise JwtKeyError(f"JWT key file {path}{where}: alg {alg!r} does not fit the key")
            algorithms = (alg,)
        keys.append(VerificationKey(key, algorithms, str(kid) if kid is not None else None, path))
    return keys


def parse_secret(data: bytes, path: Path) -> list[VerificationKey]:
    """The HS256 secret: the file's bytes, without a trailing newline."""
    secret = data.rstrip(b"\r\n")
    if len(secret) < MIN_SECRET_BYTES:
        raise JwtKeyError(f"JWT secret file {path}: {len(secret)} bytes (at least {MIN_SECRET_BYTES})")
    return [VerificationKey(secret, ("HS256",), None, path)]


class KeyFile:
    """One key file followed on disk: :meth:`changed` stats it and, when it changed, parses it again."""

    def __init__(self, path: Path, parse: Callable[[bytes, Path], list[VerificationKey]]) -> None:
        self.path = path
        self._parse = parse
        self.keys: list[VerificationKey] = []
        self._signature: tuple[int, int, int, int] | None = None
        self._seen = False

    def changed(self) -> bool:
        """Re-read the file if it changed; True when its keys did."""
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int, int] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        except OSError as exc:
            log.error("JWT key file %s: %s; keeping the last good keys", self.path, exc.strerror or exc)
            return False
        if self._seen and signature == self._signature:
            return False
        self._seen, self._signature = True, signature
        if signature is None:
            log.warning("JWT key file %s does not exist: no token signed with its keys is valid", self.path)
            self.keys = []
            return True
        try:
            keys = self._parse(self.path.read_bytes(), self.path)
        except OSError as exc:
            log.error("JWT key file %s: %s; keeping the last good keys", self.path, exc.strerror or exc)
            return False
        except JwtKeyError as exc:
            log.error("%s; keeping the last good keys (%d)", exc, len(self.keys))
            return False
        self.keys = keys
        log.info("JWT key file %s: %d keys", self.path, len(keys))
        return True


class JwtVerifier:
    """Bearer tokens that are JWTs to principals (see the module's text for what is checked)."""

    def __init__(
        self,
        files: Iterable[KeyFile],
        audience: str | None = None,
        issuer: str | None = None,
        leeway_s: float = 30.0,
        role_claim: str = "role",
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.files = tuple(files)
        self.audience = audience
        self.issuer = issuer
        self.leeway_s = leeway_s
        self.role_claim = role_claim
        self._clock = clock
        self._cache_size = cache_size
        self._cache: dict[str, tuple[Principal, float]] = {}  # token -> (principal, valid until: exp + leeway)
        self._keys: tuple[VerificationKey, ...] = ()
        self._checked = -math.inf
        self.refresh()

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float] = time.monotonic) -> JwtVerifier | None:
        """The verifier the settings ask for; None when they name no key source (no JWT is valid)."""
        files = [KeyFile(path, parse_pem) for path in settings.jwt_public_keys]
        if settings.jwt_jwks_file is not None:
            files.append(KeyFile(settings.jwt_jwks_file, parse_jwks))
        if settings.jwt_hs256_secret_file is not None and settings.jwt_allow_hs256:
            files.append(KeyFile(settings.jwt_hs256_secret_file, parse_secret))
        if not files:
            return None
        return cls(
            files, settings.jwt_audience, settings.jwt_issuer, settings.jwt_leeway_s, settings.jwt_role_claim, clock
        )

    @property
    def keys(self) -> tuple[VerificationKey, ...]:
        return self._keys

    def __len__(self) -> int:
        return len(self._cache)

    def refresh(self) -> None:
        """At most every KEY_FILE_CHECK_S: stat each key file; any change replaces the keys and empties the cache."""
        now = self._clock()
        if now - self._checked < KEY_FILE_CHECK_S:
            return
        self._checked = now
        changed = False
        for file in self.files:  # every file, no short cut: each records its new state
            changed = file.changed() or changed
        if changed:
            self._keys = tuple(key for file in self.files for key in file.keys)
            self._cache.clear()

    def verify(self, token: str, now: float) -> Principal | None:
        if token.count(".") != 2:
            return None  # not a JWT (compact JWS): not this verifier's kind
        self.refresh()
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            del self._cache[token]
        try:
            principal, until = self._verify(token, now)
        except Exception as exc:  # anything wrong with an untrusted token is the same 401
            log.info("JWT refused: %s", exc or type(exc).__name__)
            raise Unauthenticated(INVALID_CREDENTIALS) from None
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = (principal, until)
        return principal

    def _verify(self, token: str, now: float) -> tuple[Principal, float]:
        if len(token) > MAX_TOKEN_BYTES:
            raise ValueError(f"token of {len(token)} bytes (at most {MAX_TOKEN_BYTES})")
        header = jwt.get_unverified_header(token)
        alg, kid = header.get("alg"), header.get("kid")
        candidates = [
            key for key in self._keys if alg in key.algorithms and (key.kid is None or kid is None or key.kid == kid)
        ]
        if not candidates:
            raise ValueError(f"no key for alg {alg!r}" + (f" and kid {kid!r}" if kid is not None else ""))
        problem: Exception | None = None
        for key in candidates:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=list(key.algorithms),
                    audience=self.audience,
                    issuer=self.issuer,
                    options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp", "sub"]},
                )
            except jwt.InvalidSignatureError as exc:
                problem = exc  # another key may have signed it
                continue
            return self._principal(claims, now)
        raise problem or ValueError("no key verified the signature")

    def _principal(self, claims: dict[str, Any], now: float) -> tuple[Principal, float]:
        exp, nbf = claims["exp"], claims.get("nbf")
        if not _number(exp) or (nbf is not None and not _number(nbf)):
            raise ValueError("'exp' and 'nbf' must be numbers (seconds since the epoch)")
        until = float(exp) + self.leeway_s
        if now >= until:
            raise jwt.ExpiredSignatureError(f"expired at {exp} (leeway {self.leeway_s:g} s)")
        if nbf is not None and now < float(nbf) - self.leeway_s:
            raise jwt.ImmatureSignatureError(f"not valid before {nbf} (leeway {self.leeway_s:g} s)")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise ValueError("'sub' must be a non-empty string")
        role = role_of(claims.get(self.role_claim))
        if role is None:
            log.info("JWT of %r: claim %r names no known role (read, infer, admin)", subject, self.role_claim)
        return Principal(subject, role, CredentialKind.JWT, f"jwt:{subject}"), until


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def role_of(claim: Any) -> Role | None:
    """The role a claim names: a role name, or a list of them (the highest known one); None for anything else."""
    names = [claim] if isinstance(claim, str) else claim if isinstance(claim, list) else []
    roles = []
    for name in names:
        if isinstance(name, str):
            try:
                roles.append(Role.parse(name))
            except ValueError:
                pass
    return max(roles, default=None)
