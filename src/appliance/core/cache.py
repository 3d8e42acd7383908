"""The response cache (Triton's ``response_cache { enable: true }``): responses kept by a digest of what made them.

A model version whose config enables it, on a server started with a cache (``--cache-config local,size=BYTES``
or ``redis,host=H,port=P``), looks each checked request up here before running it and puts each successful
response in after (:meth:`appliance.core.model.ModelVersion.infer`). The key is a digest (:func:`response_key`),
so no request is kept. :class:`ResponseCache` is the small interface both stores implement:
:class:`LocalResponseCache` here, the in-process LRU with a byte budget, and
:class:`~appliance.core.redis_cache.RedisResponseCache`. Lookups and inserts are coroutines because Redis is
network I/O; the local cache's never suspend, so they cost a request one coroutine call. Everything runs on the
event loop thread.
"""

from __future__ import annotations

import abc
import hashlib
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .types import InputTensor, OutputTensor, RequestedOutput

# What an entry costs beyond its tensors' data: the key, the dict and list slots, the tensor objects.
_ENTRY_OVERHEAD = 128
_TENSOR_OVERHEAD = 64


@dataclass(frozen=True, slots=True)
class CacheStatistics:
    """Counters of a whole cache: lookups that hit and missed, entries evicted to keep the budget, the bytes and
    entries held now and the budget (0: none), and whether the store can be used now (a Redis that is down is
    not; the local cache always is). The local cache never holds more than its budget; Redis's figures are its
    own (``used_memory`` may pass ``maxmemory`` for a moment, and other users' keys count too)."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    budget: int
    available: bool = True


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: NDArray[Any]  # read-only, owned by the cache


class ResponseCache(abc.ABC):
    """Where responses are kept. ``get`` gives new :class:`OutputTensor` objects on every hit (callers set their
    ``shared_memory``) over read-only arrays; ``put`` keeps copies, so the caller's arrays stay its own. Neither
    raises: a store that fails is a miss, and a response it cannot keep is not kept."""

    @abc.abstractmethod
    async def get(self, key: bytes) -> list[OutputTensor] | None:
        """The outputs kept under ``key``, or None (a miss)."""

    @abc.abstractmethod
    async def put(self, key: bytes, outputs: Sequence[OutputTensor]) -> None:
        """Keep ``outputs`` under ``key``; a response larger than the whole budget is not kept."""

    @abc.abstractmethod
    def statistics(self) -> CacheStatistics:
        """The counters as of now (for a remote store, its figures as of the last :meth:`refresh_statistics`)."""

    async def start(self) -> None:  # noqa: B027 - a hook: the local cache has nothing to start
        """Begin (on the event loop, before the first request): connect to a remote store."""

    async def refresh_statistics(self) -> None:  # noqa: B027
        """Read a remote store's own figures (before a metrics scrape); the local cache has them always."""

    async def close(self) -> None:  # noqa: B027
        """Let the store go (at shutdown)."""


class LocalResponseCache(ResponseCache):
    """In-process least-recently-used cache holding at most ``budget`` bytes of responses."""

    def __init__(self, budget: int) -> None:
        if budget <= 0:
            raise ValueError(f"cache budget must be positive, got {budget}")
        self.budget = budget
        self._entries: OrderedDict[bytes, tuple[tuple[_Tensor, ...], int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    async def get(self, key: bytes) -> list[OutputTensor] | None:
        entry = self._entries.get(key)
        if entry is None:
            self._misses += 1
            return None
        self._hits += 1
        self._entries.move_to_end(key)
        return [OutputTensor(t.name, t.datatype, t.shape, t.data) for t in entry[0]]

    async def put(self, key: bytes, outputs: Sequence[OutputTensor]) -> None:
        tensors = tuple(_Tensor(o.name, o.datatype, o.shape, _frozen_copy(o.data)) for o in outputs)
        size = len(key) + _ENTRY_OVERHEAD + sum(_TENSOR_OVERHEAD + _data_bytes(t.data) for t in tensors)
        if size > self.budget:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        while self._entries and self._bytes + size > self.budget:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= evicted
            self._evictions += 1
        self._entries[key] = (tensors, size)
        self._bytes += size

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(self._hits, self._misses, self._evictions, len(self._entries), self._bytes, self.budget)


def _frozen_copy(array: NDArray[Any]) -> NDArray[Any]:
    """A copy of its own (not a view into a batch's output), that nobody can write to."""
    copy = np.array(array, copy=True, order="C")
    copy.setflags(write=False)
    return copy


def _data_bytes(array: NDArray[Any]) -> int:
    if array.dtype.kind == "O":  # BYTES: a pointer per element plus the element itself
        return int(array.nbytes) + sum(len(v) for v in array.flat)
    return int(array.nbytes)


# -- keys ------------------------------------------------------------------------------------------


def content_digest(model_dir: Path, version: int, config: bytes) -> str:
    """sha256 over what a model version's responses follow from: the (serialized) config, the files at the top of
    the model folder (``config.pbtxt``, label files) and every file of the version folder. A model reloaded with a
    changed file gets another digest, so none of its old responses can hit."""
    digest = hashlib.sha256()
    digest.update(struct.pack("<Q", len(config)) + config)
    version_dir = model_dir / str(version)
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    if version_dir.is_dir():
        files += sorted(p for p in version_dir.rglob("*") if p.is_file())
    for path in files:
        name = str(path.relative_to(model_dir)).encode()
        digest.update(struct.pack("<QQ", len(name), path.stat().st_size) + name)
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def response_key(
    model: str, version: int, digest: str, inputs: Sequence[InputTensor], outputs: Sequence[RequestedOutput]
) -> bytes:
    """sha256 of the model, version and content digest, each input's name, datatype, shape and bytes (by name),
    and the requested outputs with their classification counts (in the order asked: the response follows it).
    sha256 rather than blake2b: OpenSSL runs it on the CPU's SHA instructions (x86 SHA-NI, Armv8 crypto
    extensions), 28 against 62 us for a 48 KiB input on the development machine."""
    h = hashlib.sha256()

    def text(value: str) -> None:
        raw = value.encode()
        h.update(struct.pack("<Q", len(raw)) + raw)

    text(model)
    h.update(struct.pack("<q", version))
    text(digest)
    h.update(struct.pack("<Q", len(inputs)))
    for tensor in sorted(inputs, key=lambda t: t.name):
        text(tensor.name)
        text(tensor.datatype)
        h.update(struct.pack(f"<Q{len(tensor.shape)}q", len(tensor.shape), *tensor.shape))
        data = tensor.data
        if data.dtype.kind == "O":
            for value in data.flat:
                raw = value.encode() if isinstance(value, str) else bytes(value)
                h.update(struct.pack("<Q", len(raw)) + raw)
        else:
            h.update(struct.pack("<Q", data.nbytes))
            h.update(np.ascontiguousarray(data).data)
    h.update(struct.pack("<Q", len(outputs)))
    for output in outputs:
        text(output.name)
        h.update(struct.pack("<q", output.classification))
    return h.digest()
