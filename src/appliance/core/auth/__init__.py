"""Authentication, roles, rate limits and the audit log: transport-free, checked once for REST and gRPC.

The adapters extract the ``Authorization`` header (REST) or ``authorization`` metadata (gRPC), name the
:class:`~.roles.Operation`, and call :meth:`~.guard.Guard.admit`; everything else happens here:

- ``roles.py``: :class:`Role`, :class:`Operation` and the role each operation requires, :class:`Principal`.
- ``keys.py``: API keys (``apk_<id>_<secret>``), their file of hashes, and what ``appliance keys`` does to it.
- ``authenticator.py``: credential verifiers, API keys and their key file followed on disk.
- ``jwt_tokens.py``: the JWT verifier (RS/ES public keys, a JWKS, HS256 only when allowed), its key files.
- ``ratelimit.py``: one token bucket per key.
- ``audit.py``: the audit log (JSON lines file, the journal, the recent entries).
- ``guard.py``: :class:`Guard`, the one entry point: authenticate, authorize, rate-limit, audit, count.
"""
