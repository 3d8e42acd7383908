"""System shared memory: Triton's ``shared_memory`` extension, transport-free.

A local client creates a POSIX shared-memory object (``shm_open``, so a file under ``/dev/shm``), registers a
window of it under a name, and then names that region, an offset and a byte size in place of an input's data or
an output's destination. The registry maps each region once, at registration; an input is read as a numpy view
of the mapping (no copy), an output is copied into it once. Every use is bounds-checked, against the region and
against the object's current size (a client that shrinks the object after registering it would otherwise make
the server fault on the next read).

Requests hold a :meth:`SharedMemoryRegistry.lease` on the regions they name: a region unregistered while a
request reads it disappears from the name table at once, and is unmapped when that request is done.

All methods run on the event loop thread; backends only read the input views, from their instance threads,
while the lease is held.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import math
import mmap
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import datatypes
from .errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied, TooLarge, Unsupported
from .metadata import RegionStatus
from .types import InferRequest, InferResponse, InputTensor, SharedMemoryRef

log = logging.getLogger(__name__)

#: Where ``shm_open`` keeps its objects on Linux.
SHM_ROOT = Path("/dev/shm")

#: Each registered region holds one mapping and one file descriptor.
MAX_REGIONS = 256

PARAM_REGION = "shared_memory_region"
PARAM_OFFSET = "shared_memory_offset"
PARAM_BYTE_SIZE = "shared_memory_byte_size"
SHARED_MEMORY_PARAMS = (PARAM_REGION, PARAM_OFFSET, PARAM_BYTE_SIZE)


@functools.lru_cache(maxsize=1024)
def is_local_client(host: str | None) -> bool:
    """Whether a peer is on this machine: a loopback address, or ``None`` for a transport without addresses
    (a Unix socket)."""
    if host is None:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def require_local_client(local: bool) -> None:
    """System shared memory is memory of this machine: a remote client has no use for it, and could otherwise
    map, read or overwrite the shared-memory objects of local processes."""
    if not local:
        raise PermissionDenied(
            "system shared memory is only available to clients on this machine (loopback or a Unix socket)"
        )


def shared_memory_ref(params: Mapping[str, Any], what: str) -> SharedMemoryRef | None:
    """The region named by a tensor's parameters (both transports carry the same three), or None."""
    region = params.get(PARAM_REGION)
    if region is None:
        for key in (PARAM_OFFSET, PARAM_BYTE_SIZE):
            if key in params:
                raise InvalidArgument(f"{what}: parameter '{key}' given without '{PARAM_REGION}'")
        return None
    if not isinstance(region, str) or not region:
        raise InvalidArgument(f"{what}: parameter '{PARAM_REGION}' must be a non-empty string")
    if PARAM_BYTE_SIZE not in params:
        raise InvalidArgument(f"{what}: parameter '{PARAM_BYTE_SIZE}' is required with '{PARAM_REGION}'")
    sizes = []
    for key, default in ((PARAM_OFFSET, 0), (PARAM_BYTE_SIZE, None)):
        value = params.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidArgument(f"{what}: parameter '{key}' must be a non-negative integer")
        sizes.append(value)
    return SharedMemoryRef(region, sizes[0], sizes[1])


def _object_path(key: str) -> Path:
    """The file of a POSIX shared-memory key: ``/name`` (one leading slash, as ``shm_open`` wants it)."""
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise InvalidArgument(f"Unable to open shared memory region: '{key}' (not a valid shared memory key)")
    return SHM_ROOT / name


class _Region:
    """One registered window of a shared-memory object, mapped once."""

    __slots__ = ("status", "_map", "_start", "_end", "users", "unregistered")

    def __init__(self, status: RegionStatus) -> None:
        self.status = status
        path = _object_path(status.key)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            reason = "no such object" if exc.errno == errno.ENOENT else exc.strerror
            raise InvalidArgument(f"Unable to open shared memory region: '{status.key}' ({reason})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidArgument(f"Unable to open shared memory region: '{status.key}' (not a regular file)")
            end = status.offset + status.byte_size
            if end > info.st_size:
                raise InvalidArgument(
                    f"failed to register shared memory region '{status.name}': offset {status.offset} + byte_size "
                    f"{status.byte_size} = {end} is beyond the end of '{status.key}' ({info.st_size} bytes)"
                )
            # mmap offsets must be page-aligned: map from the page that holds the start of the window
            page_start = status.offset - status.offset % mmap.ALLOCATIONGRANULARITY
            self._map = mmap.mmap(fd, end - page_start, mmap.MAP_SHARED, offset=page_start)
        except OSError as exc:
            raise InvalidArgument(
                f"failed to register shared memory region '{status.name}': cannot map '{status.key}' ({exc.strerror})"
            ) from None
        finally:
            os.close(fd)  # the mapping keeps its own descriptor
        self._start = status.offset - page_start  # the window, as offsets into the mapping
        self._end = self._start + status.byte_size
        self.users = 0
        self.unregistered = False

    def check(self, ref: SharedMemoryRef) -> None:
        """Check ``ref`` against the region."""
        if self._start + ref.offset + ref.byte_size > self._end:
            raise InvalidArgument(
                f"Invalid offset + byte size for shared memory region: '{ref.region}' (offset {ref.offset} + "
                f"byte_size {ref.byte_size} = {ref.offset + ref.byte_size}, the region holds "
                f"{self.status.byte_size} bytes)"
            )

    def check_object(self) -> None:
        """Check that the object still holds the region (an fstat: once per request, not once per tensor)."""
        size = self._map.size()
        if size < self.status.offset + self.status.byte_size:  # shrunk since registration
            raise InvalidArgument(
                f"shared memory region '{self.status.name}': '{self.status.key}' is now smaller than the registered "
                f"region ({size} bytes); register it again"
            )

    def window(self, ref: SharedMemoryRef) -> tuple[mmap.mmap, int]:
        """The mapping and where ``ref`` starts in it; ``ref`` was checked when the request took its lease."""
        return self._map, self._start + ref.offset

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:
            # A numpy view of an input still exists (a traceback, a batch not yet collected); the mapping goes
            # when the last view does.
            log.debug("shared memory region %r: unmapped when its last view is released", self.status.name)


class SharedMemoryRegistry:
    """The system shared-memory regions registered with this server, by name."""

    def __init__(self) -> None:
        self._regions: dict[str, _Region] = {}

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name:
            raise InvalidArgument("shared memory region name must not be empty")
        if name in self._regions:
            raise AlreadyExists(f"shared memory region '{name}' already in manager")
        if offset < 0 or byte_size <= 0:
            raise InvalidArgument(
                f"failed to register shared memory region '{name}': offset must be >= 0 and byte_size > 0 "
                f"(got offset {offset}, byte_size {byte_size})"
            )
        if len(self._regions) >= MAX_REGIONS:
            raise TooLarge(
                f"failed to register shared memory region '{name}': {MAX_REGIONS} regions are registered "
                "already; unregister some first"
            )
        self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size))
        log.info("registered shared memory region %r: %s, offset %d, %d bytes", name, key, offset, byte_size)

    def unregister(self, name: str = "") -> None:
        """Unregister one region, or every region when ``name`` is empty. An unknown name is not an error (as in
        Triton). A region in use by a request is unmapped when the request is done."""
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is None:
                continue
            region.unregistered = True
            if region.users == 0:
                region.close()
            log.info("unregistered shared memory region %r", each)

    def status(self, name: str = "") -> list[RegionStatus]:
        if not name:
            return [r.status for r in self._regions.values()]
        region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find system shared memory region: '{name}'")
        return [region.status]

    def close(self) -> None:
        self.unregister()

    # -- requests --------------------------------------------------------------------------------

    def lease(self, request: InferRequest) -> Lease:
        """Hold the regions ``request`` names for as long as it runs (use the lease as a context manager); every
        offset and size is checked first. A plain class rather than a generator: this is on every shared-memory
        request's path."""
        refs = [i.ref for i in request.shared_memory_inputs]
        refs += [o.shared_memory for o in request.outputs if o.shared_memory is not None]
        held: dict[str, _Region] = {}
        try:
            for ref in refs:
                region = self._regions.get(ref.region)
                if region is None:
                    raise InvalidArgument(f"Unable to find shared memory region: '{ref.region}'")
                region.check(ref)
                if ref.region not in held:
                    region.check_object()
                    region.users += 1
                    held[ref.region] = region
        except BaseException:
            _release(held.values())
            raise
        return Lease(request, held)


def _release(regions: Iterable[_Region]) -> None:
    for region in regions:
        region.users -= 1
        if region.unregistered and region.users == 0:
            region.close()


class Lease:
    """The regions one request names, held until it is done (even if they are unregistered meanwhile)."""

    __slots__ = ("_request", "_regions", "_views")

    def __init__(self, request: InferRequest, regions: dict[str, _Region]) -> None:
        self._request = request
        self._regions = regions
        self._views: list[InputTensor] = []

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_views()
        _release(self._regions.values())

    def drop_views(self) -> None:
        """Take the input views out of the request, so that a region unregistered meanwhile can be unmapped."""
        if self._views:
            self._request.inputs = [t for t in self._request.inputs if not any(t is v for v in self._views)]
            self._views.clear()

    def read_inputs(self) -> None:
        """Append the inputs that lie in regions to the request's inputs, as views (BYTES: decoded)."""
        request = self._request
        for item in request.shared_memory_inputs:
            what = f"input '{item.name}'"
            datatype = datatypes.by_name(item.datatype, what)
            mapping, start = self._regions[item.ref.region].window(item.ref)
            if datatype.name != "BYTES":  # Triton's text for a size that does not fit the tensor
                expected = math.prod(item.shape) * datatype.dtype.itemsize
                if item.ref.byte_size != expected:
                    raise InvalidArgument(
                        f"input byte size mismatch for input '{item.name}' for model '{request.model_name}'. "
                        f"Expected {expected}, got {item.ref.byte_size}"
                    )
            with memoryview(mapping) as view:
                # numbers: a view of the mapping, no copy (it keeps its own export); BYTES: decoded into objects
                array = datatypes.from_raw(view[start : start + item.ref.byte_size], datatype, item.shape, what)
            array.flags.writeable = False  # the client's memory: backends read it, never write it
            tensor = InputTensor(item.name, datatype.name, item.shape, array)
            request.inputs.append(tensor)
            self._views.append(tensor)

    def write_outputs(self, response: InferResponse) -> None:
        """Copy each output the request placed in a region into it, and mark it as sent that way."""
        places = {o.name: o.shared_memory for o in self._request.outputs if o.shared_memory is not None}
        for tensor in response.outputs:
            ref = places.get(tensor.name)
            if ref is None:
                continue
            mapping, start = self._regions[ref.region].window(ref)
            data: NDArray[Any] = tensor.data
            raw = datatypes.serialize_bytes(data) if data.dtype.kind in "OSU" else None
            size = data.nbytes if raw is None else len(raw)
            if size > ref.byte_size:
                raise InvalidArgument(
                    f"shared memory size specified with the request for output '{tensor.name}' "
                    f"({ref.byte_size} bytes) should be at least {size} bytes to hold the results"
                )
            if raw is None:
                np.frombuffer(mapping, data.dtype, data.size, start)[...] = data.reshape(-1)
            else:
                mapping[start : start + size] = raw
            tensor.shared_memory = ref


def cuda_unsupported() -> Unsupported:
    return Unsupported("CUDA shared memory is not supported by this server; use system shared memory")
