"""``/v2/keys``: the API keys, managed through the admin API as ``appliance keys`` does on the device (the same
key file, the same audit actions): list them (never their hashes), create one (the key is shown only in that
answer), revoke one. The service takes a change at once, not at its next look at the file."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response

from ..core.auth.guard import Guard
from ..core.auth.keys import create_key, parse_duration, read_keys, revoke_key
from ..core.auth.roles import Role
from ..core.errors import InvalidArgument, NotFound, Unsupported
from .codec import json_object
from .endpoints import read_body

_MAX_BODY = 4096


class KeysEndpoint:
    def __init__(self, guard: Guard | None) -> None:
        self._guard = guard

    def _keys_guard(self) -> Guard:
        if self._guard is None:
            raise Unsupported("there are no API keys with auth off (--auth true turns it on)")
        return self._guard

    async def keys(self) -> dict[str, Any]:
        """Every key of the key file, oldest first: name, role, created, expires, revoked, rate, burst."""
        guard = self._keys_guard()
        records = await asyncio.to_thread(read_keys, guard.keys.path)
        return {
            "keys": [
                {k: v for k, v in r.to_json().items() if k not in ("salt", "hash")}
                for r in sorted(records.values(), key=lambda r: r.created)
            ]
        }

    async def create(self, name: str, request: Request) -> Response:
        """``{"role": "infer", "expires": "90d", "rate": 10, "burst": 20}`` (all but ``role`` optional): a new key
        named ``name``; the answer holds the key, shown this once."""
        guard = self._keys_guard()
        doc = json_object(await read_body(request, _MAX_BODY))
        unknown = sorted(set(doc) - {"role", "expires", "rate", "burst"})
        if unknown:
            raise InvalidArgument(f"'{unknown[0][:40]}' is not a field of a key (role, expires, rate, burst)")
        role_text = doc.get("role")
        if not isinstance(role_text, str):
            raise InvalidArgument("'role' must be one of read, infer, admin")
        try:
            role = Role.parse(role_text)
        except ValueError:
            raise InvalidArgument(f"'role' must be one of read, infer, admin, got '{role_text[:40]}'") from None
        expires = doc.get("expires")
        if expires is not None and not isinstance(expires, str):
            raise InvalidArgument("'expires' must be a duration such as '90d'")
        try:
            expires_in = parse_duration(expires) if expires else None
        except ValueError as exc:
            raise InvalidArgument(f"'expires': {exc}") from None
        rate, burst = doc.get("rate"), doc.get("burst")
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0
        ):
            raise InvalidArgument("'rate' must be requests per second above 0")
        if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
            raise InvalidArgument("'burst' must be a whole number from 1")
        try:
            key, record = await asyncio.to_thread(
                create_key, guard.keys.path, role, name, expires_in, None if rate is None else float(rate), burst
            )
        except ValueError as exc:  # a name taken or not allowed: the message says which
            raise InvalidArgument(str(exc).replace(f"key file {guard.keys.path}: ", "")) from None
        guard.keys.reload()
        body = {
            "name": record.name,
            "role": record.role.label,
            "key": key,
            "expires": record.to_json()["expires"],
            "note": "the key is shown only in this answer",
        }
        return JSONResponse(body, status_code=201)

    async def revoke(self, name: str) -> dict[str, Any]:
        """Revoke the key named ``name``: it stops working at once."""
        guard = self._keys_guard()
        try:
            revoked = await asyncio.to_thread(revoke_key, guard.keys.path, name)
        except ValueError:
            raise NotFound(f"no key named '{name[:64]}' that is not revoked already") from None
        guard.keys.reload()
        return {"revoked": [r.name for r in revoked]}
