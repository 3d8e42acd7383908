"""The interface between the core and a backend. The core owns it; ``appliance.backends`` implements it.

A backend serves one model version, in one of two ways:

- :class:`BatchBackend` executes batches that the core forms (ONNX Runtime, TensorRT). It loads the version as
  ``instance_count`` execution instances; the core's :class:`~appliance.core.batching.DynamicBatcher` calls
  :meth:`BatchBackend.execute` with a whole batch, from one thread per instance (or inline on the event loop for
  models measured to be very fast), so one instance is never entered twice at the same time.
- :class:`SelfSchedulingBackend` queues, batches and runs requests by itself (Triton): the core hands it each
  request as it comes, and follows whether the version is still ready there.

The two are abstract base classes, not protocols: a backend declares its kind by subclassing one, the core tells
the kinds apart by that declaration (a ``match`` on the class), and a backend missing a method fails when it is
built, not when the method is first needed.

A :class:`BackendFactory` (one per kind of model file) completes a config and loads a version. Which factory
serves a config is chosen outside the core (:func:`appliance.backends.factory_for`) and handed to it as a
:data:`FactoryFor`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeAlias

from numpy.typing import NDArray
from tritonclient.grpc import model_config_pb2 as mc


class LoadError(RuntimeError):
    """A model version could not be loaded; the message is shown in the model's status."""


class BackendUnreachable(LoadError):
    """The backend lives outside this process and could not be reached (Triton down): loading is retried."""


class BatchBackend(abc.ABC):
    """Executes the batches the core forms, on ``instance_count`` instances."""

    @property
    @abc.abstractmethod
    def instance_count(self) -> int: ...

    @abc.abstractmethod
    def execute(
        self, instance: int, inputs: dict[str, NDArray[Any]], outputs: Sequence[str]
    ) -> dict[str, NDArray[Any]]:
        """Run one batch on one instance (blocking). Inputs are in the model's own shapes (``reshape`` applied)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the instances; called once, after the last batch (from a worker thread)."""

    #: Whether :meth:`resize` changes the instances in place; if not, a new count means a reload (hot-swap).
    resizable: bool = False

    def resize(self, count: int) -> None:
        """Have ``count`` instances (blocking, from a worker thread): make the new ones, numbered after the
        existing, or release the last ones, which the batcher no longer uses. Raises LoadError when it cannot."""
        raise NotImplementedError


class SelfSchedulingBackend(abc.ABC):
    """Queues, batches and runs requests by itself; the core sends each request straight to it."""

    @abc.abstractmethod
    async def infer(
        self, inputs: dict[str, NDArray[Any]], outputs: Sequence[str], priority: int, timeout_us: int
    ) -> dict[str, NDArray[Any]]:
        """One request, with its priority and timeout; failures are :class:`~appliance.core.errors.InferenceError`."""

    @abc.abstractmethod
    async def is_ready(self) -> bool:
        """Whether the version is still ready where it runs (False when that is unreachable)."""

    @abc.abstractmethod
    async def reload(self) -> bool:
        """Load the version again where it runs (after a restart there); True when it is ready."""

    @abc.abstractmethod
    async def unload(self, replaced: bool = False) -> None:
        """Let the version go, once, after its last request: unload it where it runs, unless ``replaced``: a new load
        of the same model has taken its place there (a hot swap), and only this connection to it is closed."""


Backend: TypeAlias = BatchBackend | SelfSchedulingBackend


class BackendOptions(Protocol):
    """The settings a backend may read (a subset of :class:`appliance.settings.Settings`)."""

    @property
    def intra_op_thread_count(self) -> int: ...

    @property
    def ort_allow_spinning(self) -> bool: ...


class BackendFactory(Protocol):
    name: str

    def complete_config(self, config: mc.ModelConfig, model_dir: Path, version: int) -> None:
        """Fill what the config leaves out (inputs, outputs, max_batch_size) from the model file, as Triton."""
        ...

    def load(self, config: mc.ModelConfig, model_dir: Path, version: int, options: BackendOptions) -> Backend:
        """Load one version; LoadError (BackendUnreachable to retry later) when it cannot. Each factory's own
        return type names the kind of backend it loads."""
        ...


FactoryFor: TypeAlias = Callable[[mc.ModelConfig, str], BackendFactory]
"""The factory for a config, given the Triton URL (``""`` for none); raises LoadError when none serves it."""
