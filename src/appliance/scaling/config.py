"""The autoscaler's configuration: one TOML file (the image's ``/etc/appliance/autoscaler.toml``).

Every field is checked at start; a contradictory file is refused with the file, the model and the field named
(``autoscaler.toml: models.cnn: min_instances 3 > max_instances 2``). That every model named exists is checked
against the service once it answers (:func:`check_models`).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration the autoscaler refuses; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """How one model's instances follow its load."""

    min_instances: int = 1
    max_instances: int = 2
    target_ongoing_requests: float = 2.0  # in-flight requests per instance aimed for
    p95_objective_ms: float = 0.0  # 0: none
    scale_up_delay_s: float = 15.0
    scale_down_delay_s: float = 300.0
    tolerance: float = 0.1
    gpu_load_ceiling: float = 0.95
    park_idle_after_s: float = 0.0  # 0: never parked; else may be parked under memory pressure once this idle


@dataclass(frozen=True, slots=True)
class PowerPolicy:
    """nvpmodel stepping; ``modes`` from least to most power."""

    enabled: bool = False
    modes: tuple[int, ...] = ()
    up_gpu_load: float = 0.8
    down_gpu_load: float = 0.3
    up_after_s: float = 60.0
    down_after_s: float = 300.0


DEFAULT_SERVICE_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """Parking idle models while the memory CPU and GPU share runs low."""

    min_available_ratio: float = 0.0  # park while less than this share of the device's memory is available
    model_budget_bytes: int = 0  # park while the loaded models hold more than this (their estimates); 0: no budget

    @property
    def enabled(self) -> bool:
        return self.min_available_ratio > 0 or self.model_budget_bytes > 0


@dataclass(frozen=True, slots=True)
class AutoscalerConfig:
    service_url: str = DEFAULT_SERVICE_URL
    interval_s: float = 5.0
    dry_run: bool = False
    models: dict[str, ModelPolicy] | None = None  # None: none configured
    power: PowerPolicy = PowerPolicy()
    memory: MemoryPolicy = MemoryPolicy()
    source: str = "(defaults)"

    def model_policies(self) -> dict[str, ModelPolicy]:
        return dict(self.models or {})


_TOP = {"service_url", "interval_s", "dry_run", "defaults", "models", "power", "memory"}


def _number(where: str, value: Any, positive: bool = False, whole: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    if whole and not isinstance(value, int):
        raise ConfigError(f"{where}: must be a whole number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    if value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value!r}")
    return value


def _model_policy(where: str, table: Any, base: ModelPolicy) -> ModelPolicy:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    known = {f.name: f for f in fields(ModelPolicy)}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(known)})")
        whole = key in ("min_instances", "max_instances")
        positive = key in ("max_instances", "target_ongoing_requests", "gpu_load_ceiling")
        number = _number(f"{where}.{key}", value, positive=positive, whole=whole)
        changes[key] = int(number) if whole else float(number)
    policy = replace(base, **changes)
    if policy.min_instances < 1:
        raise ConfigError(f"{where}.min_instances: must be >= 1 (unloading is not the instances' job)")
    if policy.min_instances > policy.max_instances:
        raise ConfigError(f"{where}: min_instances {policy.min_instances} > max_instances {policy.max_instances}")
    if policy.tolerance >= 1:
        raise ConfigError(f"{where}.tolerance: must be below 1, got {policy.tolerance}")
    if policy.gpu_load_ceiling > 1:
        raise ConfigError(f"{where}.gpu_load_ceiling: a load ratio from 0 to 1, got {policy.gpu_load_ceiling}")
    return policy


def _power(where: str, table: Any) -> PowerPolicy:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    known = {f.name for f in fields(PowerPolicy)}
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})")
    enabled = table.get("enabled", False)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}.enabled: must be true or false")
    modes = table.get("modes", [])
    if not isinstance(modes, list) or not all(isinstance(m, int) and not isinstance(m, bool) for m in modes):
        raise ConfigError(f"{where}.modes: must be a list of nvpmodel mode numbers")
    if any(m < 0 or m > 99 for m in modes) or len(set(modes)) != len(modes):
        raise ConfigError(f"{where}.modes: mode numbers from 0 to 99, each once, got {modes}")
    if enabled and len(modes) < 2:
        raise ConfigError(f"{where}.modes: stepping needs at least two modes, got {modes}")
    numbers = {
        key: float(_number(f"{where}.{key}", table[key], positive=key.endswith("_after_s")))
        for key in ("up_gpu_load", "down_gpu_load", "up_after_s", "down_after_s")
        if key in table
    }
    policy = PowerPolicy(enabled=enabled, modes=tuple(modes), **numbers)
    if policy.up_gpu_load > 1:
        raise ConfigError(f"{where}.up_gpu_load: a load ratio from 0 to 1, got {policy.up_gpu_load}")
    if policy.down_gpu_load >= policy.up_gpu_load:
        raise ConfigError(
            f"{where}: down_gpu_load {policy.down_gpu_load} must be below up_gpu_load {policy.up_gpu_load} "
            "(the band between them is dead)"
        )
    return policy


def _memory(where: str, table: Any) -> MemoryPolicy:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    known = ("min_available_ratio", "model_budget_bytes")
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(known)})")
    ratio = float(_number(f"{where}.min_available_ratio", table.get("min_available_ratio", 0.0)))
    if ratio >= 1:
        raise ConfigError(f"{where}.min_available_ratio: a share of the memory, below 1, got {ratio}")
    budget = int(_number(f"{where}.model_budget_bytes", table.get("model_budget_bytes", 0), whole=True))
    return MemoryPolicy(ratio, budget)


def parse_config(doc: dict[str, Any], source: str) -> AutoscalerConfig:
    for key in doc:
        if key not in _TOP:
            raise ConfigError(f"{source}: {key}: unknown setting (known: {', '.join(sorted(_TOP))})")
    url = doc.get("service_url", DEFAULT_SERVICE_URL)
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: service_url: must be an http:// or https:// address, got {url!r}")
    interval = float(_number(f"{source}: interval_s", doc.get("interval_s", 5.0), positive=True))
    dry_run = doc.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ConfigError(f"{source}: dry_run: must be true or false")
    defaults = _model_policy(f"{source}: defaults", doc.get("defaults", {}), ModelPolicy())
    tables = doc.get("models", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{source}: models: must be a table of [models.NAME] tables")
    models = {name: _model_policy(f"{source}: models.{name}", t, defaults) for name, t in tables.items()}
    power = _power(f"{source}: power", doc.get("power", {}))
    memory = _memory(f"{source}: memory", doc.get("memory", {}))
    return AutoscalerConfig(url.rstrip("/"), interval, dry_run, models, power, memory, source)


def load_config(path: Path) -> AutoscalerConfig:
    try:
        with path.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(doc, str(path))


def check_models(config: AutoscalerConfig, known: set[str]) -> None:
    """Every model the file names must be one the service's repository has."""
    for name in config.model_policies():
        if name not in known:
            raise ConfigError(
                f"{config.source}: models.{name}: the service has no model '{name}' "
                f"(it has: {', '.join(sorted(known)) or 'none'})"
            )
