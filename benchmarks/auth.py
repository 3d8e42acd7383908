"""What checking credentials costs a request: :meth:`Guard.admit` in process, for an API key and for JWTs.

Each call is timed on its own (``perf_counter_ns``) and the median and 99th percentile per call are printed:

- ``api key``: the same infer key each time (a dict lookup and one salted SHA-256);
- ``jwt RS256`` / ``jwt ES256`` / ``jwt HS256``, cached: the same token each time (the verified-token cache);
- the same, uncached: a fresh token each call (header parse, signature check, claims): a token's first use.

    python benchmarks/auth.py                   # 20,000 cached calls, 2,000 uncached tokens per kind
    python benchmarks/auth.py --count 100000 --fresh 5000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from appliance.core.auth.guard import Guard
from appliance.core.auth.keys import create_key
from appliance.core.auth.roles import Operation, Peer, Role
from appliance.settings import Settings

PEER = Peer("127.0.0.1:5000", True)
SECRET = "s" * 48


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _time(admit: Callable[[str], object], headers: list[str]) -> tuple[float, float]:
    """Median and p99, in microseconds, of ``admit`` over ``headers`` (one call each)."""
    took = []
    for header in headers:
        start = time.perf_counter_ns()
        admit(header)
        took.append(time.perf_counter_ns() - start)
    took.sort()
    return statistics.median(took) / 1e3, took[min(len(took) - 1, int(len(took) * 0.99))] / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000, help="calls with the same credential")
    parser.add_argument("--fresh", type=int, default=2_000, help="fresh tokens per JWT kind (uncached)")
    args = parser.parse_args()
    signers: dict[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey] = {
        "RS256": rsa.generate_private_key(65537, 2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        key, _ = create_key(root / "keys.json", Role.INFER, "bench")
        (root / "rsa.pem").write_bytes(_pem(signers["RS256"]))
        (root / "ec.pem").write_bytes(_pem(signers["ES256"]))
        (root / "hs256").write_text(SECRET)
        settings = Settings(
            keys_file=root / "keys.json",
            jwt_public_keys=[root / "rsa.pem", root / "ec.pem"],
            jwt_allow_hs256=True,
            jwt_hs256_secret_file=root / "hs256",
            jwt_audience="appliance",
        )
        guard = Guard(settings)

        def admit(header: str) -> object:
            return guard.admit(header, PEER, Operation.INFER, "mlp")

        def token(alg: str, n: int) -> str:
            claims = {"sub": "bench", "role": "infer", "aud": "appliance", "exp": int(time.time()) + 3600, "n": n}
            return jwt.encode(claims, SECRET if alg == "HS256" else signers[alg], algorithm=alg)

        print(f"Guard.admit per call, in process; {args.count} calls with one credential, {args.fresh} fresh tokens")
        print(f"{'credential':<26} {'median us':>10} {'p99 us':>10}")
        rows = [("api key", [f"Bearer {key}"] * args.count)]
        for alg in ("RS256", "ES256", "HS256"):
            rows.append((f"jwt {alg}, cached", [f"Bearer {token(alg, 0)}"] * args.count))
        for alg in ("RS256", "ES256", "HS256"):
            rows.append((f"jwt {alg}, first use", [f"Bearer {token(alg, n + 1)}" for n in range(args.fresh)]))
        for name, headers in rows:
            admit(headers[0])  # warm: the key files read, the cache holds the repeated token
            median, p99 = _time(admit, headers)
            print(f"{name:<26} {median:>10.1f} {p99:>10.1f}")


if __name__ == "__main__":
    main()
