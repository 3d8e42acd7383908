"""Roles, the operations they allow, and who is asking: the authorization table of every transport."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import PermissionDenied


class Role(enum.IntEnum):
    """A key's role; each includes the ones below it."""

    READ = 1
    """Health, metadata, statistics, metrics, the repository index, routes and shared-memory status."""
    INFER = 2
    """``read``, plus inference and registering / unregistering shared memory."""
    ADMIN = 3
    """Everything: repository load and unload, declaring and changing routes, the audit log."""

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        """The role named ``text`` (``read``, ``infer``, ``admin``); ValueError names the choices."""
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown role '{text}' (read, infer or admin)") from None


class Operation(enum.Enum):
    """What a request asks to do, named the same on REST and gRPC; the value is the audit log's ``action``."""

    HEALTH = "health"
    METRICS = "metrics"
    SERVER_METADATA = "server_metadata"
    MODEL_READY = "model_ready"
    MODEL_METADATA = "model_metadata"
    MODEL_CONFIG = "model_config"
    MODEL_STATISTICS = "model_statistics"
    REPOSITORY_INDEX = "repository_index"
    REPOSITORY_LOAD = "repository_load"
    REPOSITORY_UNLOAD = "repository_unload"
    MODEL_INSTANCES = "model_instances"  # the autoscaler's lever
    MODEL_PARK = "model_park"  # the autoscaler's memory lever: unload until the next request
    MODEL_WARMUP = "model_warmup"  # run a model's warm-up samples now, timed
    ENGINES_READ = "engines_read"  # GET /v2/engines: the TensorRT engine manifests, checked against this device
    INFER = "infer"
    SHARED_MEMORY_STATUS = "shared_memory_status"
    SHARED_MEMORY_REGISTER = "shared_memory_register"
    SHARED_MEMORY_UNREGISTER = "shared_memory_unregister"
    ROUTES_READ = "routes_read"
    DEVICE_READ = "device_read"  # GET /v2/device: telemetry of the device
    AUTOSCALER_READ = "autoscaler_read"  # GET /v2/autoscaler/decisions
    HISTORY_READ = "history_read"  # GET /v2/history and /v2/events: the panel's charts and timeline
    SETTINGS_READ = "settings_read"  # GET /v2/settings: the effective settings, secrets masked
    SUPPORT_BUNDLE = "support_bundle"  # GET /v2/support/bundle
    AUTOSCALER_REPORT = "autoscaler_report"  # the autoscaler daemon reports a decision
    ROUTE_DECLARE = "route_declare"
    ROUTE_DELETE = "route_delete"
    ROUTE_ACTION = "route_action"
    AUDIT_READ = "audit_read"
    KEYS_READ = "keys_read"  # GET /v2/keys
    KEY_CREATE = "key_create"  # appliance keys create
    KEY_REVOKE = "key_revoke"  # appliance keys revoke
    LOGS_READ = "logs_read"  # GET /v2/logs: the service's newest log lines
    PANEL_VIEW = "panel_view"  # the admin panel's pages (a read key sees them read-only)
    UPDATE_READ = "update_read"  # GET /v2/update: slots, pending update, outcomes, data partition
    UPDATE_APPLY = "update_apply"  # POST /v2/update: a signed bundle, verified and queued
    UNITS_READ = "units_read"  # GET /v2/units: the state of the appliance's systemd units

    @property
    def required(self) -> Role | None:
        """The least role that may do this; None: open to anyone, without credentials."""
        return REQUIRED[self]

    @property
    def audited(self) -> bool:
        """Admin operations are audited: each attempt, its outcome, and each refusal."""
        return REQUIRED[self] is Role.ADMIN


REQUIRED: dict[Operation, Role | None] = {
    Operation.HEALTH: None,  # liveness and readiness: probes carry no credentials
    Operation.METRICS: Role.READ,  # unless settings.metrics_access lets the client in without one
    Operation.SERVER_METADATA: Role.READ,
    Operation.MODEL_READY: Role.READ,
    Operation.MODEL_METADATA: Role.READ,
    Operation.MODEL_CONFIG: Role.READ,
    Operation.MODEL_STATISTICS: Role.READ,
    Operation.REPOSITORY_INDEX: Role.READ,
    Operation.SHARED_MEMORY_STATUS: Role.READ,
    Operation.ROUTES_READ: Role.READ,
    Operation.DEVICE_READ: Role.READ,
    Operation.AUTOSCALER_READ: Role.READ,
    Operation.HISTORY_READ: Role.READ,
    Operation.UNITS_READ: Role.READ,
    Operation.ENGINES_READ: Role.READ,
    Operation.INFER: Role.INFER,
    Operation.SHARED_MEMORY_REGISTER: Role.INFER,
    Operation.SHARED_MEMORY_UNREGISTER: Role.INFER,
    Operation.REPOSITORY_LOAD: Role.ADMIN,
    Operation.REPOSITORY_UNLOAD: Role.ADMIN,
    Operation.MODEL_INSTANCES: Role.ADMIN,
    Operation.MODEL_PARK: Role.ADMIN,
    Operation.MODEL_WARMUP: Role.ADMIN,
    Operation.AUTOSCALER_REPORT: Role.ADMIN,
    Operation.SETTINGS_READ: Role.ADMIN,
    Operation.SUPPORT_BUNDLE: Role.ADMIN,
    Operation.ROUTE_DECLARE: Role.ADMIN,
    Operation.ROUTE_DELETE: Role.ADMIN,
    Operation.ROUTE_ACTION: Role.ADMIN,
    Operation.AUDIT_READ: Role.ADMIN,
    Operation.KEYS_READ: Role.ADMIN,
    Operation.KEY_CREATE: Role.ADMIN,
    Operation.KEY_REVOKE: Role.ADMIN,
    Operation.LOGS_READ: Role.ADMIN,
    Operation.PANEL_VIEW: Role.READ,
    Operation.UPDATE_READ: Role.READ,
    Operation.UPDATE_APPLY: Role.ADMIN,
}


class CredentialKind(enum.Enum):
    """What proved a principal's identity."""

    API_KEY = "api_key"
    JWT = "jwt"
    ANONYMOUS = "anonymous"  # an open operation, or /metrics let in by metrics_access


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: the key's name or the JWT's subject (the audit log's and the metrics' ``key``)
    and role; None for a valid JWT that names no known role, which every guarded operation refuses (403).

    ``bucket`` identifies the rate limit it draws from (the key id), empty for none; ``rate`` and ``burst`` are the
    credential's own limit, None for the server's default."""

    name: str
    role: Role | None
    kind: CredentialKind
    bucket: str = ""
    rate: float | None = None
    burst: int | None = None


ANONYMOUS = Principal("", Role.READ, CredentialKind.ANONYMOUS)


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a request comes from: its address as the transport reports it, and whether it is on the device."""

    address: str
    local: bool


def authorize(principal: Principal, operation: Operation) -> None:
    """PermissionDenied unless the principal's role allows the operation."""
    required = operation.required
    if required is not None and (principal.role is None or principal.role < required):
        raise PermissionDenied(f"permission denied: '{operation.value}' needs role {required.label}")
