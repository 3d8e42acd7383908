"""What ``appliance serve`` sets up in its own process before its servers start: the threads' scheduling
policy and the C allocator's thresholds for large buffers. Both are Linux (glibc) facilities; elsewhere each
step is skipped, and a step the system refuses is logged and skipped.

The allocator: a request's tensors arrive in buffers of their own size (grpc's message, the protobuf bytes, a
REST body), 602 KB each for a ``[1,3,224,224]`` FP32 image. glibc serves buffers over its mmap threshold
(128 KB, raised on the fly up to the size of the largest one freed) with ``mmap`` and returns them with
``munmap``, and it gives the top of its heap back to the system whenever more than its trim threshold (twice
the mmap threshold) lies free there: when a request's several buffers are freed together, the heap shrinks,
and the next request faults every page in again, zero-filled by the kernel. Measured on the image model over
gRPC at concurrency 1 (2-core development machine, ``benchmarks/README.md``): 265 page faults and 1.2-1.4 ms of
server CPU a request in that state, 0.4 faults and 0.5-0.6 ms with the fixed thresholds below. Freed memory up
to the trim threshold then stays in the process for the next request instead of going back to the system.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os

from .settings import CpuSchedulingPolicy, Settings

log = logging.getLogger(__name__)

#: Buffers up to this size come from the heap and are reused (glibc's largest allowed value, 32 MiB on 64-bit):
#: every image tensor and batch of them; larger ones are mapped and unmapped as before.
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: Free memory at the top of a heap up to this size is kept for reuse rather than given back.
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def set_up(settings: Settings) -> None:
    """Apply both, before the servers start their threads."""
    set_cpu_scheduling_policy(settings.cpu_scheduling_policy)
    set_allocator_thresholds()


def set_cpu_scheduling_policy(policy: CpuSchedulingPolicy) -> None:
    """Set the policy of every thread the process has (a few start at import: grpc's, ONNX Runtime's); the
    threads they start later inherit it."""
    if not hasattr(os, "SCHED_BATCH"):  # not Linux
        return
    number = os.SCHED_BATCH if policy is CpuSchedulingPolicy.BATCH else os.SCHED_OTHER
    try:
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
                os.sched_setscheduler(int(tid), number, os.sched_param(0))
    except OSError as exc:
        log.warning("cpu_scheduling_policy %s cannot be set (%s): running under the current policy", policy.value, exc)


def set_allocator_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds; False where the C library has no ``mallopt`` or refuses."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    done: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    done = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and done
    if not done:
        log.warning("the C library refused the allocator thresholds: large buffers are mapped for each request")
    return done
