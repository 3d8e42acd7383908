"""Inference requests and responses as the core sees them, free of any transport."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str  # KServe v2 name, as the client declared it
    shape: tuple[int, ...]
    data: NDArray[Any]  # already in ``shape`` and the declared datatype's numpy dtype


@dataclass(slots=True)
class RequestedOutput:
    name: str
    classification: int = 0  # > 0: return the top N classes as "score:index:label" strings
    binary: bool | None = None  # REST only: whether the client wants binary data for this output


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str = ""  # "" lets the version policy choose (the highest served version)
    id: str = ""
    inputs: list[InputTensor] = field(default_factory=list)
    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: every output
    priority: int = 0  # Triton schedule-policy extension; 0 is the model's default level
    timeout_us: int = 0  # Triton schedule-policy extension; 0 is the model's default
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: NDArray[Any]


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)
