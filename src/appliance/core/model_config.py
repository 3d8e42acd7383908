"""Triton's ``config.pbtxt``: parsing, completing from the model file, and the typed view the core uses.

The file is parsed as Triton's ``ModelConfig`` protobuf in text format (the ``model_config_pb2`` that
``tritonclient`` ships), so a Triton repository loads unchanged. Errors name the file and, for syntax
errors, the line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from . import datatypes
from .datatypes import DataType

ModelConfig = mc.ModelConfig

#: max_batch_size that completion gives a model whose first dimensions are all dynamic (as Triton does).
DEFAULT_MAX_BATCH_SIZE = 4


class ConfigError(ValueError):
    """A model's configuration is unusable; the message names the file or field."""


def read_config(path: Path) -> mc.ModelConfig:
    """Parse ``config.pbtxt``; a missing file gives an empty config that completion fills in."""
    config = mc.ModelConfig()
    if not path.exists():
        return config
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return config


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output as the client sees it (``dims`` exclude the batch dimension)."""

    name: str
    datatype: DataType
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None  # the model's own shape, when config has ``reshape``
    optional: bool = False
    label_filename: str = ""

    def client_shape(self, max_batch_size: int) -> list[int]:
        return ([-1] if max_batch_size > 0 else []) + list(self.dims)


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Triton's ``ModelQueuePolicy`` with units in the names."""

    timeout_action_delay: bool = False  # False: REJECT
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0  # 0: unlimited


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    """What the scheduler needs to know, derived from ``max_batch_size`` and ``dynamic_batching``."""

    max_batch_size: int
    combine: bool  # dynamic batching on: requests are combined into batches
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    priority_levels: int = 0  # 0: priorities off, one queue
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = QueuePolicy()
    priority_queue_policy: dict[int, QueuePolicy] = field(default_factory=dict)

    @property
    def levels(self) -> int:
        return max(1, self.priority_levels)

    def level_of(self, priority: int) -> int:
        """Queue index (0 = highest) of a request priority; 0 or out of range takes the default, as Triton."""
        if self.priority_levels == 0:
            return 0
        if priority <= 0 or priority > self.priority_levels:
            priority = self.default_priority_level or self.priority_levels
        return priority - 1

    def queue_policy(self, level: int) -> QueuePolicy:
        return self.priority_queue_policy.get(level + 1, self.default_queue_policy)


def _queue_policy(policy: mc.ModelQueuePolicy) -> QueuePolicy:
    return QueuePolicy(
        timeout_action_delay=policy.timeout_action == mc.ModelQueuePolicy.DELAY,
        default_timeout_us=policy.default_timeout_microseconds,
        allow_timeout_override=policy.allow_timeout_override,
        max_queue_size=policy.max_queue_size,
    )


def batching_policy(config: mc.ModelConfig, where: str) -> BatchingPolicy:
    mbs = config.max_batch_size
    if not config.HasField("dynamic_batching"):
        return BatchingPolicy(max_batch_size=mbs, combine=False)
    db = config.dynamic_batching
    for size in db.preferred_batch_size:
        if size <= 0 or (mbs > 0 and size > mbs):
            raise ConfigError(f"{where}: dynamic_batching.preferred_batch_size {size} must be in 1..{mbs}")
    if db.priority_levels and not 0 < db.default_priority_level <= db.priority_levels:
        raise ConfigError(
            f"{where}: dynamic_batching.default_priority_level {db.default_priority_level} "
            f"must be in 1..{db.priority_levels}"
        )
    for level in db.priority_queue_policy:
        if not 0 < level <= db.priority_levels:
            raise ConfigError(
                f"{where}: dynamic_batching.priority_queue_policy level {level} must be in 1..{db.priority_levels}"
            )
    return BatchingPolicy(
        max_batch_size=mbs,
        combine=mbs > 0,
        max_queue_delay_us=db.max_queue_delay_microseconds,
        preferred_batch_sizes=tuple(sorted(db.preferred_batch_size)),
        priority_levels=db.priority_levels,
        default_priority_level=db.default_priority_level,
        default_queue_policy=_queue_policy(db.default_queue_policy),
        priority_queue_policy={k: _queue_policy(v) for k, v in db.priority_queue_policy.items()},
    )


def _tensor_spec(t: mc.ModelInput | mc.ModelOutput, kind: str, where: str) -> TensorSpec:
    if not t.name:
        raise ConfigError(f"{where}: an {kind} has no name")
    type_name = mc.DataType.Name(t.data_type)
    if type_name not in datatypes.BY_CONFIG_NAME:
        raise ConfigError(f"{where}: {kind} '{t.name}' has unsupported data_type {type_name}")
    if not t.dims and not t.HasField("reshape"):
        raise ConfigError(f"{where}: {kind} '{t.name}' has no dims")
    reshape = tuple(t.reshape.shape) if t.HasField("reshape") else None
    return TensorSpec(
        name=t.name,
        datatype=datatypes.BY_CONFIG_NAME[type_name],
        dims=tuple(t.dims),
        reshape=reshape,
        optional=getattr(t, "optional", False),
        label_filename=getattr(t, "label_filename", ""),
    )


def input_specs(config: mc.ModelConfig, where: str) -> list[TensorSpec]:
    return [_tensor_spec(t, "input", where) for t in config.input]


def output_specs(config: mc.ModelConfig, where: str) -> list[TensorSpec]:
    return [_tensor_spec(t, "output", where) for t in config.output]


def instance_count(config: mc.ModelConfig) -> int:
    """Execution instances: the sum of ``instance_group`` counts (1 when there is none)."""
    if not config.instance_group:
        return 1
    return sum(max(1, group.count) for group in config.instance_group)


def string_parameter(config: mc.ModelConfig, key: str) -> str | None:
    if key in config.parameters:
        return str(config.parameters[key].string_value)
    return None


LATENCY_OBJECTIVE = "latency_objective_ms"


def latency_objective_s(config: mc.ModelConfig, where: str) -> float | None:
    """The model's p99 latency objective (``parameters { key: "latency_objective_ms" ... }``), in seconds: exported as
    ``appliance_model_latency_objective_seconds`` for the alert rules and dashboards; None when it has none."""
    text = string_parameter(config, LATENCY_OBJECTIVE)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{where}: parameter '{LATENCY_OBJECTIVE}' must be milliseconds above 0, got '{text[:40]}'")
    return value / 1000


def read_labels(model_dir: Path, filename: str) -> list[str]:
    path = model_dir / filename
    try:
        return path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read labels file: {exc.strerror}") from None


# --- version policy -----------------------------------------------------------------------------


def available_versions(model_dir: Path) -> list[int]:
    """Numeric version folders of a model, ascending."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isascii() and p.name.isdigit())


def select_versions(config: mc.ModelConfig, available: list[int], where: str) -> list[int]:
    """The versions ``version_policy`` asks to serve: latest (default 1), all, or specific."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(available)
    if which == "specific":
        missing = [v for v in policy.specific.versions if v not in available]
        if missing:
            raise ConfigError(f"{where}: version_policy.specific names missing versions {missing}")
        return sorted(set(policy.specific.versions))
    num = policy.latest.num_versions if which == "latest" else 1
    return available[-max(1, num) :]


def to_text(config: mc.ModelConfig) -> str:
    return str(text_format.MessageToString(config))
