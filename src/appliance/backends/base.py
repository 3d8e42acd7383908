"""The interface between the core and a backend.

A backend loads one model version as ``instance_count`` execution instances. The scheduler calls
:meth:`Backend.execute` with a whole batch, from one thread per instance (or inline on the event loop for
models measured to be very fast), so one instance is never entered twice at the same time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc


class LoadError(RuntimeError):
    """A model version could not be loaded; the message is shown in the model's status."""


class BackendUnreachable(LoadError):
    """The backend lives outside this process and could not be reached (Triton down): loading is retried."""


class Backend(Protocol):
    @property
    def instance_count(self) -> int: ...

    def execute(
        self, instance: int, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        """Run one batch on one instance. Inputs are in the model's own shapes (``reshape`` applied)."""
        ...

    def close(self) -> None: ...


class BackendFactory(Protocol):
    name: str

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        """Fill what the config leaves out (inputs, outputs, max_batch_size) from the model file, as Triton."""
        ...

    def load(self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions) -> Backend: ...


class BackendOptions(Protocol):
    """The settings a backend may read (a subset of :class:`appliance.settings.Settings`)."""

    @property
    def intra_op_threads(self) -> int: ...

    @property
    def ort_allow_spinning(self) -> bool: ...
