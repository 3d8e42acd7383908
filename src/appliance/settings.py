"""All settings of the appliance, in one place.

Sources, highest priority first: command-line flags, environment variables (prefix ``APPLIANCE_``), the
TOML config file (``--config`` or ``APPLIANCE_CONFIG``; ``/etc/appliance/appliance.toml`` on the device),
then the defaults below. Names follow ``tritonserver``'s flags where the two overlap, so
``--model-repository`` is ``model_repository`` here and ``APPLIANCE_MODEL_REPOSITORY`` in the environment.

Nothing is read at import time: call :func:`load_settings`.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "APPLIANCE_"
#: A systemd unit name (no globs, no paths): what ``systemd_units`` may hold.
UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,200}\.(service|socket|timer|path|mount|target)")
#: The units of the appliance, as the image names them: the default of ``systemd_units``.
APPLIANCE_UNITS = (
    "appliance.service",
    "tritonserver.service",
    "appliance-engines.service",
    "appliance-engines-rebuild.service",
    "appliance-autoscaler.service",
    "nginx.service",
    "appliance-firewall.service",
    "appliance-data-prepare.service",
    "appliance-update-confirm.service",
    "appliance-tls-cert.service",
)
CONFIG_ENV = "APPLIANCE_CONFIG"


class ModelControlMode(str, enum.Enum):
    """How models get loaded, as in ``tritonserver --model-control-mode``."""

    NONE = "none"
    """Load every model in the repository at start; the repository API cannot load or unload."""
    EXPLICIT = "explicit"
    """Load only the models named by ``load_model`` at start; the repository API loads and unloads."""
    POLL = "poll"
    """Load every model at start, then follow the repository on disk every ``repository_poll_secs``: new models
    load, removed ones unload, changed ones reload (hot-swap); the repository API cannot load or unload."""


class CpuSchedulingPolicy(str, enum.Enum):
    """The Linux scheduling policy of the server's threads, as systemd's ``CPUSchedulingPolicy=`` names it."""

    OTHER = "other"
    """``SCHED_OTHER``: a thread that wakes up may preempt the one running on its CPU."""
    BATCH = "batch"
    """``SCHED_BATCH``: the same share of the CPUs, but a thread that wakes up does not preempt the running one;
    it runs when that one blocks or its time slice ends."""


class MetricsAccess(str, enum.Enum):
    """Who may read ``/metrics`` without credentials when ``auth`` is on (with ``auth`` off, everyone)."""

    OPEN = "open"
    """Anyone."""
    LOOPBACK = "loopback"
    """Clients on the device (loopback, a Unix socket); others need a key of role ``read`` or above."""
    KEY = "key"
    """Nobody: every scrape needs a key of role ``read`` or above."""


@dataclass(frozen=True, slots=True)
class LocalCacheConfig:
    """``--cache-config local,size=BYTES``: the in-process LRU cache, holding at most ``size`` bytes."""

    size: int


@dataclass(frozen=True, slots=True)
class RedisCacheConfig:
    """``--cache-config redis,host=H,port=P[,user=U][,password=PW][,db=N][,connect_timeout=MS][,socket_timeout=MS]``:
    responses kept in a Redis server. The names are those of Triton's redis cache; the port defaults to 6379 (Triton
    requires it), and the timeouts are short by default and cannot be 0 (Triton's "forever"), because a Redis that
    is down or hung must cost a request nothing. ``password`` is not in the repr."""

    host: str
    port: int = 6379
    user: str = ""
    password: str = field(default="", repr=False)
    db: int = 0
    connect_timeout_ms: int = 100
    socket_timeout_ms: int = 100


CacheConfig = LocalCacheConfig | RedisCacheConfig

_REDIS_SETTINGS = ("host", "port", "user", "password", "db", "connect_timeout", "socket_timeout")


def join_cache_configs(values: list[str]) -> str:
    """Triton's repeated flag, ``--cache-config redis,host=H --cache-config redis,port=P``, as one setting
    (``redis,host=H,port=P``). SettingsError when the flags name different caches."""
    kinds = {value.partition(",")[0] for value in values}
    if len(kinds) > 1:
        raise SettingsError(
            f"cache_config: --cache-config names one cache, got {', '.join(sorted(repr(k) for k in kinds))}"
        )
    settings = [value.partition(",")[2] for value in values]
    return ",".join([kinds.pop(), *(s for s in settings if s)]) if values else ""


def mask_cache_config(text: str) -> str:
    """``--cache-config`` text with any password shown as ``***``."""
    return ",".join("password=***" if p.startswith("password=") else p for p in text.split(",")) if text else text


def parse_cache_config(text: str) -> CacheConfig | None:
    """Triton's ``--cache-config`` syntax, ``local,size=BYTES`` or ``redis,host=H,port=P,...``; "" is no cache.
    ValueError says what is wrong, quoting the text with any password as ``***``."""
    if not text:
        return None
    kind, _, rest = text.partition(",")
    shown = mask_cache_config(text)
    known = {"local": ("size",), "redis": _REDIS_SETTINGS}.get(kind)
    if known is None:
        raise ValueError(
            f"--cache-config '{shown}': unknown cache '{kind}' (this appliance has 'local,size=BYTES' and "
            "'redis,host=HOST,port=PORT')"
        )
    settings: dict[str, str] = {}
    for part in rest.split(",") if rest else []:
        key, eq, value = part.partition("=")
        if key not in known or not eq:
            raise ValueError(
                f"--cache-config '{shown}': unknown setting '{part}' of the {kind} cache (it has {', '.join(known)})"
            )
        if key in settings:
            raise ValueError(f"--cache-config '{shown}': '{key}' is given twice")
        settings[key] = value
    return _local(shown, settings) if kind == "local" else _redis(shown, settings)


def _local(shown: str, settings: dict[str, str]) -> LocalCacheConfig:
    if "size" not in settings:
        raise ValueError(f"--cache-config '{shown}': the local cache needs its size in bytes: 'local,size=BYTES'")
    size = settings["size"]
    if not (size.isascii() and size.isdigit() and int(size) > 0):
        raise ValueError(f"--cache-config '{shown}': size must be a positive number of bytes, got '{size}'")
    return LocalCacheConfig(int(size))


def _redis(shown: str, settings: dict[str, str]) -> RedisCacheConfig:
    host = settings.get("host", "")
    if not host:
        raise ValueError(f"--cache-config '{shown}': the redis cache needs its host: 'redis,host=HOST,port=PORT'")

    def number(name: str, default: int, low: int, high: int, what: str) -> int:
        value = settings.get(name)
        if value is None:
            return default
        if not (value.isascii() and value.isdigit() and low <= int(value) <= high):
            raise ValueError(f"--cache-config '{shown}': {name} must be {what}, got '{value}'")
        return int(value)

    if "user" in settings and not settings.get("password"):
        raise ValueError(f"--cache-config '{shown}': user needs a password (Redis's AUTH user password)")
    return RedisCacheConfig(
        host=host,
        port=number("port", 6379, 1, 65535, "a port number from 1 to 65535"),
        user=settings.get("user", ""),
        password=settings.get("password", ""),
        db=number("db", 0, 0, 1 << 31, "a database number (0 or more)"),
        connect_timeout_ms=number("connect_timeout", 100, 1, 60_000, "milliseconds from 1 to 60000"),
        socket_timeout_ms=number("socket_timeout", 100, 1, 60_000, "milliseconds from 1 to 60000"),
    )


class Settings(BaseSettings):
    """Settings of ``appliance serve``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", use_enum_values=False)

    model_repository: Path = Path("/var/lib/appliance/models")
    """Triton-layout model repository: ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/<version>/``."""

    model_control_mode: ModelControlMode = ModelControlMode.NONE
    """``none`` loads every model at start; ``explicit`` loads only ``load_model`` and allows load/unload;
    ``poll`` loads every model at start, then applies the repository's changes on disk (new, removed, changed
    models) every ``repository_poll_secs``."""

    repository_poll_secs: float = Field(default=15.0, gt=0)
    """In ``poll`` mode, seconds between two scans of the repository (Triton's default, 15). Triton takes whole
    seconds; this takes any positive number. A change is applied once two scans in a row see it the same, so a
    copy in progress is not loaded: deploy by copying beside the model (``.name``) and renaming into place."""

    load_model: list[str] = Field(default_factory=list)
    """Models to load at start in ``explicit`` mode (``*`` loads all)."""

    http_address: str = "0.0.0.0"
    """Address the REST (HTTP) endpoint binds to."""

    http_port: int = Field(default=8000, ge=0, le=65535)
    """REST port; 0 picks a free port. REST also serves ``/metrics``."""

    grpc_address: str = "0.0.0.0"
    """Address the gRPC endpoint binds to."""

    grpc_port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port; 0 picks a free port."""

    allow_http: bool = True
    """Serve REST."""

    allow_grpc: bool = True
    """Serve gRPC."""

    exit_timeout_secs: float = Field(default=30.0, ge=0)
    """On SIGTERM, how long to wait for in-flight and queued requests to finish before exiting anyway."""

    history_interval_s: float = Field(default=10.0, ge=0.05)
    """How often the service samples each model's request rate, error rate and p99, and the device's figures, for
    ``GET /v2/history`` (the admin panel's charts)."""

    history_keep_s: float = Field(default=6 * 3600.0, gt=0)
    """How long those samples are kept, in memory (6 hours: 2,160 points a series at 10 s)."""

    history_file: Path | None = None
    """Where the history and the timeline are kept across restarts (saved every ten minutes and at stop, read
    back at start; on the device, the data partition). Unset: in memory only, empty after a restart."""

    park_wake_timeout_s: float = Field(default=60.0, gt=0)
    """How long a request for a parked model (unloaded by the autoscaler to free memory) waits for the model to
    load again before it gets 503; the load goes on, and later requests find the model ready."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Largest accepted request body (REST) or message (gRPC); larger ones get 413 / RESOURCE_EXHAUSTED."""

    websocket_max_in_flight: int = Field(default=16, ge=1)
    """Inference requests one WebSocket (``/v2/models/{model}/infer/ws``) may have running or answered but not yet
    sent; at the bound the server stops reading that socket until a result has gone out, so a client that sends
    faster than it reads is held back by TCP, not queued in the server's memory."""

    image_max_pixels: int = Field(default=40_000_000, gt=0)
    """Largest image (width x height) that image inference (``/infer/image``) decodes; checked from the file's
    header before any pixel is decoded, so a small file declaring huge dimensions (a decompression bomb) gets 400
    without a large allocation. The default takes an 8K frame (33 Mpixels); Pillow itself refuses images over
    about 179 Mpixels whatever this says."""

    intra_op_thread_count: int = Field(default=1, ge=0)
    """ONNX Runtime intra-op threads per session (0 lets ONNX Runtime choose); a model's
    ``parameters { key: "intra_op_thread_count" }`` overrides it."""

    ort_allow_spinning: bool = False
    """Let ONNX Runtime threads spin-wait for work. Off by default: spinning burns a core at low load."""

    cpu_scheduling_policy: CpuSchedulingPolicy = CpuSchedulingPolicy.BATCH
    """Linux scheduling policy of every thread of the server, set at start (threads started later inherit it).
    ``batch`` (the default) keeps the server's own threads from preempting its event loop thread: grpc.aio's
    completion-queue thread wakes up about five times for each gRPC request, and under ``other`` most of those
    wake-ups preempted the event loop on a busy CPU (4-6 involuntary context switches a request). The CPU share
    is the same under both policies; ``other`` lets the server's wake-ups preempt other processes again."""

    inline_compute_us: int = Field(default=100, ge=0)
    """Batches whose measured compute time is under this many microseconds run on the event loop thread,
    saving two thread hand-offs (tiny models); slower ones run on one thread per instance, where requests
    that arrive meanwhile queue up and batch. 0 turns it off."""

    inline_alone_compute_us: int = Field(default=1000, ge=0)
    """A request that arrives alone at an idle model also runs on the event loop thread if its measured compute
    time is under this many microseconds, the loop itself idled longer than that since the model's last batch,
    and the model has not batched requests together for a second: a lone client waits for no thread hand-off,
    while loads that batch still go to the instance thread. It blocks the loop for about that long, or longer
    where a model's compute time depends on its input's values (a request far slower than the ones measured).
    0 turns it off."""

    cache_config: str = ""
    """Response cache, as Triton writes it, for the models whose config.pbtxt has
    ``response_cache { enable: true }``: ``local,size=BYTES`` is an in-process LRU cache of at most BYTES;
    ``redis,host=HOST,port=PORT`` keeps responses in a Redis server, shared by every appliance that uses it (port
    6379 by default; optional ``user=`` with ``password=``, ``db=``, and ``connect_timeout=MS`` and
    ``socket_timeout=MS``, 100 each). A Redis that is down or slow means requests run without the cache, never
    that they fail; size and eviction are Redis's own (``maxmemory``, ``allkeys-lru``). Repeated flags join, as
    in Triton: ``--cache-config redis,host=H --cache-config redis,port=P``. Empty: no cache."""

    @field_validator("cache_config")
    @classmethod
    def _check_cache_config(cls, value: str) -> str:
        parse_cache_config(value)
        return value

    routes_file: Path | None = None
    """Where the routes (A/B, canary, shadow) declared through ``/v2/routes`` are kept, and read back at start;
    each change is written atomically. Unset: routes last until the server stops. The image keeps them in
    ``/var/lib/appliance/routes.json``."""

    auth: bool = False
    """Require credentials: ``Authorization: Bearer <key>`` on REST, ``authorization`` metadata on gRPC, with
    keys made by ``appliance keys create`` (roles ``read``, ``infer``, ``admin``). Liveness and readiness stay
    open; ``/metrics`` follows ``metrics_access``. Off: every request is served, as before."""

    keys_file: Path = Path("/var/lib/appliance/keys.json")
    """The API keys (``appliance keys create|list|revoke``): names, roles and hashes, never the keys themselves;
    JSON, mode 0600, written atomically. The server checks it for a change at most every half second, when a key is
    used, so a revoked key stops working within a second; a file it cannot parse is logged (file and line) and the
    last good keys stay in force."""

    jwt_public_keys: list[Path] = []
    """With ``auth`` on, PEM files of the public keys JWTs may be signed with (RSA of 2048 bits or more: RS256,
    RS384, RS512; EC P-256/384/521: ES256/384/512), accepted as ``Authorization: Bearer <jwt>`` beside the API
    keys; the algorithm comes from the key, never from the token. Each file is checked for a change at most every
    half second; one that does not parse is logged and its last good key stays. Environment: a JSON list."""

    jwt_jwks_file: Path | None = None
    """With ``auth`` on, a JWKS file (``{"keys": [...]}``, RSA or EC public keys) JWTs may be signed with; a key
    with a ``kid`` is used only for tokens naming it. Followed on disk like ``jwt_public_keys``."""

    jwt_allow_hs256: bool = False
    """Accept HS256 JWTs signed with the shared secret of ``jwt_hs256_secret_file``. Off by default: anyone who
    can read the secret can mint tokens of any role."""

    jwt_hs256_secret_file: Path | None = None
    """The HS256 secret (at least 32 bytes; a trailing newline is dropped); only with ``jwt_allow_hs256``."""

    jwt_audience: str | None = None
    """The ``aud`` a JWT must name; unset: a JWT must have no ``aud``."""

    jwt_issuer: str | None = None
    """The ``iss`` a JWT must have; unset: any issuer (the signing key decides)."""

    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    """Clock skew allowed when checking a JWT's ``exp`` and ``nbf`` (seconds, at most 300). ``exp`` is required."""

    jwt_role_claim: str = Field(default="role", min_length=1)
    """The JWT claim naming the role: ``read``, ``infer`` or ``admin``, or a list of them (the highest counts).
    A validly signed token without a known role is refused every operation (403 / PERMISSION_DENIED)."""

    @field_validator("jwt_public_keys", "jwt_jwks_file")
    @classmethod
    def _check_key_files(cls, value: list[Path] | Path | None) -> list[Path] | Path | None:
        for path in value if isinstance(value, list) else [value] if value is not None else []:
            if not path.is_file():
                raise ValueError(f"JWT key file {path}: not found")
        return value

    @field_validator("jwt_hs256_secret_file")
    @classmethod
    def _check_secret_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not info.data.get("jwt_allow_hs256"):
            raise ValueError("an HS256 secret file needs jwt_allow_hs256 true (HS256 is off by default)")
        if value is not None and not value.is_file():
            raise ValueError(f"JWT secret file {value}: not found")
        return value

    metrics_access: MetricsAccess = MetricsAccess.LOOPBACK
    """With ``auth`` on, who may read ``/metrics`` without a key: ``open`` (anyone), ``loopback`` (clients on
    the device; others need a key of role read or above) or ``key`` (nobody)."""

    rate_limit_rps: float = Field(default=0.0, ge=0)
    """With ``auth`` on, requests per second each key may make (token bucket) unless the key has its own rate
    (``appliance keys create --rate``); 0: no limit. Over it: 429 / RESOURCE_EXHAUSTED with ``Retry-After``."""

    rate_limit_burst: int = Field(default=0, ge=0)
    """Requests a key may make at once, in a burst, before ``rate_limit_rps`` paces it (the token bucket's size);
    0: one second's worth, the rate rounded up."""

    audit_log_file: Path | None = None
    """With ``auth`` on, where the audit log goes (JSON lines): every admin action and every refused admin
    attempt, with time, key name, source address, action, target and result. It also goes to the journal (logger
    ``appliance.audit``) and is read through ``GET /v2/audit``. Unset: journal only, the API shows the last 1000."""

    audit_log_max_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    """Size past which the audit log file is rotated to ``<file>.1`` (the previous ``.1`` is dropped)."""

    panel_session_idle_s: float = Field(default=1800.0, gt=0)
    """With ``auth`` on, an admin panel session ends after this many seconds without a request (log in again)."""

    panel_session_max_s: float = Field(default=12 * 3600.0, gt=0)
    """With ``auth`` on, an admin panel session ends this many seconds after login, however busy."""

    device_telemetry: bool = True
    """Read the device (GPU load and clocks, temperatures and throttling, power rails, memory, power mode) from
    sysfs and procfs into ``appliance_device_*`` metrics and ``GET /v2/device``. Elsewhere than on a Jetson it
    reports "not a Jetson" and what the machine has (temperatures, memory)."""

    device_root: Path = Path("/")
    """Where the device's ``/sys``, ``/proc``, ``/etc`` and ``/var`` files are read from: ``/``, or a recorded
    tree (tests, a device's files examined elsewhere)."""

    update_dir: Path | None = None
    """The A/B update record and spool on the data partition (``/data/update`` in the image): ``GET /v2/update``
    shows the running slot, an update waiting for its health check and the last outcomes; ``POST /v2/update``
    takes a signed bundle, verifies it and queues it for ``appliance-update.service``. Unset or empty: updates
    are off."""

    @field_validator("update_dir", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if value == "" else value

    update_certificate: Path = Path("/usr/share/swupdate/swupdate.pem")
    """The certificate update bundles must be signed for (the image's, on the root filesystem)."""

    update_hwrevision_file: Path = Path("/etc/hwrevision")
    """This device's ``MACHINE REVISION``, checked against a bundle's ``hardware-compatibility``."""

    update_max_bytes: int = Field(default=8 * 1024**3, gt=0)
    """The largest update bundle ``POST /v2/update`` accepts (bytes)."""

    data_state_file: Path = Path("/run/appliance-data.json")
    """What ``appliance data prepare`` found on the data partition at boot, shown by ``GET /v2/update``; the
    service logs an error at start when the partition is missing or had to be made again."""

    triton_url: str = ""
    """gRPC address (host:port) of the local tritonserver that serves models the appliance does not run in
    process (their config says so, or their backend needs it); empty: no Triton."""

    triton_check_interval_s: float = Field(default=2.0, gt=0)
    """How often Triton-served models are checked; a model Triton lost is loaded there again when it is back."""

    build_id: str = ""
    """Build the software came from (a git commit); empty reads ``BUILD_ID`` from ``os_release_path``."""

    os_release_path: Path = Path("/etc/os-release")
    """Where the image records ``BUILD_ID``."""

    systemd_units: list[str] = Field(default_factory=lambda: list(APPLIANCE_UNITS))
    """The systemd units whose state ``GET /v2/units`` reports (the panel's Overview) and whose journal
    ``GET /v2/logs?unit=`` reads: the appliance's own. No other unit is read."""

    @field_validator("systemd_units")
    @classmethod
    def _check_units(cls, value: list[str]) -> list[str]:
        for name in value:
            if not UNIT_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not a systemd unit name (such as appliance.service)")
        return value

    journal_directory: Path | None = None
    """Where ``GET /v2/logs?unit=`` reads the journal: unset, the system journal (``appliance.service`` has the
    ``systemd-journal`` group for it); a folder, the journal files in it (a journal copied off a device)."""

    log_level: str = "info"
    """Log level: debug, info, warning or error."""

    def response_cache(self) -> CacheConfig | None:
        """The response cache ``cache_config`` asks for; None when it asks for none."""
        return parse_cache_config(self.cache_config)

    def effective(self) -> dict[str, Any]:
        """Every setting as the service runs with it, as JSON values, with secrets masked (a Redis password): what
        ``GET /v2/settings`` and the support bundle show. Files that hold secrets (keys, JWT secrets) appear as
        their paths only."""
        doc: dict[str, Any] = self.model_dump(mode="json")
        doc["cache_config"] = mask_cache_config(self.cache_config)
        return doc

    def resolved_build_id(self) -> str:
        """The build id, from settings or the image's os-release; empty when neither has one."""
        if self.build_id:
            return self.build_id
        try:
            for line in self.os_release_path.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "BUILD_ID":
                    return value.strip().strip('"')
        except OSError:
            pass
        return ""


class SettingsError(ValueError):
    """A setting is invalid; the message names the setting and, for a config file, the file."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from flags (``overrides``; None means not given), the environment and the
    TOML config file (``config_file``, else ``$APPLIANCE_CONFIG``)."""
    from pydantic import ValidationError

    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is not None and not path.is_file():
        raise SettingsError(f"config file {path}: not found")

    class _FromSources(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            if path is None:
                return (init_settings, env_settings)
            return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=path))

    try:
        loaded = _FromSources(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        where = f" (config file {path})" if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()
        )
        raise SettingsError(f"invalid settings{where}: {problems}") from None
    except ValueError as exc:  # tomllib.TOMLDecodeError names the line and column
        raise SettingsError(f"config file {path}: {exc}") from None
    return Settings.model_construct(**dict(loaded))
