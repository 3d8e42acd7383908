"""The dynamic batcher: one per model version, with Triton's ``dynamic_batching`` semantics.

Requests wait in one queue per priority level (level 1 first). Whenever an execution instance is free the
batcher forms a batch: up to ``max_batch_size`` samples of requests with the same shape, preferring the
configured ``preferred_batch_size`` values, and waiting at most ``max_queue_delay_microseconds`` (counted from
the oldest request) for a fuller batch. Without ``dynamic_batching`` each request runs on its own.

Where it does better than Triton:
- Queue timeouts fire on time from a timer on the event loop, even while every instance is busy
  (Triton issue #7512). REJECT fails the request at its deadline; DELAY moves it behind every request that has
  not timed out.
- Timeouts cost no throughput (Triton issue #8870): a deadline is one heap push; expired and cancelled requests
  are skipped lazily, never searched for.
- A request whose caller has gone away (its task was cancelled) is dropped before it reaches a batch.
- Batches whose measured compute time is tiny run on the event loop thread itself, saving two thread
  hand-offs per batch; so does a lone request on an idle model whose batch is short (see :class:`Placement`).
  Everything else runs on one thread per instance, outside the GIL.

All times come from ``time.monotonic()``, not ``loop.time()``: uvloop's loop clock has millisecond resolution
and is cached per loop pass. Timers are armed relative to it (event loop timers have ~1 ms granularity, so a
sub-millisecond queue delay may wait up to a millisecond).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .errors import DeadlineExceeded, InternalError, QueueFull, Unavailable
from .model_config import BatchingPolicy

if TYPE_CHECKING:
    from .types import TraceRecord

log = logging.getLogger(__name__)

_QUEUED, _RUNNING, _DONE = 0, 1, 2
_DELAYED_QUEUE = -1
_NO_INPUTS: dict[str, NDArray[Any]] = {}
#: A model whose requests have not been batched together for this long has a lone client (see Placement).
_LONE_AFTER_S = 1.0


class Payload:
    """One request inside the batcher."""

    __slots__ = (
        "batch_size",
        "deadline",
        "delay_on_timeout",
        "dispatched",
        "enqueued",
        "future",
        "inputs",
        "queue",
        "seq",
        "shape_key",
        "state",
        "trace",
    )

    def __init__(self, inputs: dict[str, NDArray[Any]], batch_size: int, shape_key: object) -> None:
        self.inputs = inputs
        self.batch_size = batch_size
        self.shape_key = shape_key
        self.queue = 0
        self.deadline = 0.0
        self.delay_on_timeout = False
        self.future: asyncio.Future[dict[str, NDArray[Any]]] | None = None
        self.enqueued = 0.0
        self.dispatched = 0.0
        self.state = _QUEUED
        self.seq = 0
        self.trace: TraceRecord | None = None

    def release(self) -> None:
        """Drop the tensors once done: the deadline heap may hold this payload until its deadline."""
        self.inputs = _NO_INPUTS
        self.future = None


@dataclass(slots=True)
class Execution:
    """Timings of one batch, for statistics (seconds)."""

    batch_size: int
    requests: int
    input_s: float
    infer_s: float
    output_s: float
    end: float = 0.0  # time.perf_counter() when the outputs were ready (0.0: not recorded)


@dataclass(frozen=True, slots=True)
class Placement:
    """Which batches run inline on the event loop instead of on their instance's thread.

    Inline saves two thread hand-offs (to the instance thread and back to the loop), but blocks the loop while
    the batch runs: requests that arrive meanwhile wait in the transport instead of in the batcher's queue, and
    cannot join a batch. So a batch runs inline when its compute time, as measured for its batch size, is
    - under ``compute_us``: too short for the hand-offs to pay off at any load; or
    - under ``alone_compute_us``, for a batch of one request that arrived while the model was idle (nothing
      queued, no batch running) and the event loop thread idled for longer than that compute time since the
      last batch, on a model that has not batched two requests together for a second: a lone client
      (concurrency 1) waits for no hand-off, while under load the loop is busy between batches and requests
      batch, so they go to the instance thread, where they queue and batch.
    0 turns either off.
    """

    compute_us: int = 0
    alone_compute_us: int = 0


ExecuteFn = Callable[[int, dict[str, NDArray[Any]], Sequence[str]], dict[str, NDArray[Any]]]


class DynamicBatcher:
    def __init__(
        self,
        policy: BatchingPolicy,
        execute: ExecuteFn,
        instance_count: int,
        input_names: Sequence[str],
        output_names: Sequence[str],
        on_execution: Callable[[Execution], None],
        placement: Placement = Placement(),
        name: str = "",
    ) -> None:
        self._policy = policy
        self._execute_fn = execute
        self._instances = instance_count
        self._input_names = list(input_names)
        self._output_names = list(output_names)
        self._on_execution = on_execution
        self._inline_compute_s = placement.compute_us / 1e6
        self._inline_alone_s = placement.alone_compute_us / 1e6
        # When the last batch completed: time.monotonic(), and the loop thread's CPU time (time.thread_time())
        self._idle_since = float("-inf")
        self._idle_since_cpu = 0.0
        self._batched_at = float("-inf")  # time.monotonic() when a batch last held more than one request
        self._name = name
        self._queues: list[deque[Payload]] = [deque() for _ in range(policy.levels)]
        self._delayed: deque[Payload] = deque()
        self._live = [0] * policy.levels
        self._live_delayed = 0
        self._pending_samples = 0
        self._free: list[int] = []
        self._inflight = 0
        self._deadlines: list[tuple[float, int, Payload]] = []
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_at = float("inf")
        self._delay_timer: asyncio.TimerHandle | None = None
        self._seq = itertools.count()
        # Compute-time floor per batch-size bucket (powers of two): the least a batch took, drifting up 5% per
        # batch. A floor, not a mean: batches on worker threads also count time spent waiting for the GIL.
        self._compute_floor: dict[int, float] = {}
        self._work: list[queue.SimpleQueue[list[Payload] | None]] = []
        self._threads: list[threading.Thread] = []
        self._retiring: set[int] = set()  # instances past the count of a shrink, finishing their batch
        self._retired = asyncio.Event()
        self._resizing = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._schedule_soon = False
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the instance threads; call from the event loop."""
        self._loop = asyncio.get_running_loop()
        for instance in range(self._instances):
            self._start_instance(instance)
        self._accepting = True

    def _start_instance(self, instance: int) -> None:
        work: queue.SimpleQueue[list[Payload] | None] = queue.SimpleQueue()
        name = f"{self._name}#{instance}"
        thread = threading.Thread(target=self._worker, args=(instance, work), name=name, daemon=True)
        self._work.append(work)
        self._threads.append(thread)
        thread.start()
        self._free.append(instance)

    @property
    def instance_count(self) -> int:
        return self._instances

    async def resize(self, count: int, resize_backend: Callable[[int], None]) -> None:
        """Serve on ``count`` instances from now on, in place: no request waits for it or fails because of it.

        Growing: ``resize_backend(count)`` makes the new instances (in a thread: it may take seconds), then they
        take batches. Shrinking: the last instances take no new batch, those running one finish it, their threads
        end, then ``resize_backend(count)`` releases them."""
        if count < 1:
            raise ValueError(f"instance count must be at least 1, got {count}")
        async with self._resizing:
            old = self._instances
            if count > old:
                await asyncio.to_thread(resize_backend, count)
                for instance in range(old, count):
                    self._start_instance(instance)
                self._instances = count
                self._schedule()
            elif count < old:
                busy = set(range(count, old)) - set(self._free)
                self._instances = count
                self._free = [i for i in self._free if i < count]
                self._retiring = busy
                while self._retiring:
                    self._retired.clear()
                    await self._retired.wait()
                for work in self._work[count:]:
                    work.put(None)
                threads = self._threads[count:]
                del self._work[count:], self._threads[count:]

                def join() -> None:
                    for thread in threads:
                        thread.join()

                await asyncio.to_thread(join)
                await asyncio.to_thread(resize_backend, count)

    async def drain(self) -> None:
        """Stop taking requests, then wait until every queued and running request has finished."""
        self._accepting = False
        await self._idle.wait()

    async def stop(self) -> None:
        """Drain, then end the instance threads."""
        await self.drain()
        for work in self._work:
            work.put(None)

        def join() -> None:
            for thread in self._threads:
                thread.join()

        await asyncio.to_thread(join)
        for timer in (self._deadline_timer, self._delay_timer):
            if timer:
                timer.cancel()

    @property
    def pending(self) -> int:
        """Requests waiting in the queues."""
        return sum(self._live) + self._live_delayed

    @property
    def inflight(self) -> int:
        """Batches executing now."""
        return self._inflight

    # -- submitting ------------------------------------------------------------------------------

    async def submit(
        self,
        inputs: dict[str, NDArray[Any]],
        batch_size: int,
        shape_key: object = None,
        priority: int = 0,
        timeout_us: int = 0,
        trace: TraceRecord | None = None,
    ) -> tuple[dict[str, NDArray[Any]], float, float]:
        """Queue one request; return its outputs, when it was enqueued and when it was dispatched.

        ``trace`` (tracing on) receives the :class:`Execution` of the batch the request ran in.
        Raises QueueFull, DeadlineExceeded or Unavailable; if the caller is cancelled (client gone) while the
        request still waits, the request is dropped and never runs.
        """
        if not self._accepting:
            raise Unavailable(f"model '{self._name}' is not accepting requests")
        policy = self._policy
        level = policy.level_of(priority)
        queue_policy = policy.queue_policy(level)
        if queue_policy.max_queue_size and self._live[level] >= queue_policy.max_queue_size:
            raise QueueFull(
                f"model '{self._name}': queue of priority level {level + 1} is full "
                f"(max_queue_size {queue_policy.max_queue_size})"
            )
        timeout = queue_policy.default_timeout_us
        if timeout_us > 0 and queue_policy.allow_timeout_override:
            timeout = min(timeout, timeout_us) if timeout else timeout_us

        loop = self._loop
        assert loop is not None
        p = Payload(inputs, batch_size, shape_key)
        p.queue = level
        p.seq = next(self._seq)
        p.trace = trace
        p.enqueued = time.monotonic()
        future = p.future = loop.create_future()
        self._queues[level].append(p)
        self._live[level] += 1
        self._pending_samples += batch_size
        self._idle.clear()
        if timeout:
            p.deadline = p.enqueued + timeout / 1e6
            p.delay_on_timeout = queue_policy.timeout_action_delay
            heapq.heappush(self._deadlines, (p.deadline, p.seq, p))
            if p.deadline < self._deadline_at:
                self._arm_deadline_timer(p.deadline)
        if self._pending_samples == batch_size and self._free and self._runs_inline(batch_size):
            # Alone, on a free instance, and fast: run it now. Its future is done before it is awaited, so the
            # caller never suspends (the common case of tiny models).
            self._schedule()
        elif not self._schedule_soon:
            # Schedule once per event loop pass, after every request that arrived in it has been queued:
            # requests that arrive together are batched together even with max_queue_delay 0.
            self._schedule_soon = True
            loop.call_soon(self._scheduled)
        try:
            outputs = await future  # p.future is dropped once p is done
        except asyncio.CancelledError:
            if p.state == _QUEUED:
                self._unqueue(p)
                p.release()
                self._check_idle()
            raise
        return outputs, p.enqueued, p.dispatched

    # -- queues ----------------------------------------------------------------------------------

    def _unqueue(self, p: Payload) -> None:
        """Take a queued request out of the counts (it stays in its deque until it reaches the head)."""
        p.state = _DONE
        if p.queue == _DELAYED_QUEUE:
            self._live_delayed -= 1
        else:
            self._live[p.queue] -= 1
        self._pending_samples -= p.batch_size

    def _ordered_queues(self) -> list[tuple[int, deque[Payload]]]:
        return [*enumerate(self._queues), (_DELAYED_QUEUE, self._delayed)]

    def _oldest_enqueued(self) -> float:
        """Arrival time of the request that will head the next batch."""
        for index, q in self._ordered_queues():
            while q and (q[0].state != _QUEUED or q[0].queue != index):
                q.popleft()
            if q:
                return q[0].enqueued
        return float("inf")

    def _take(self, limit: int) -> list[Payload]:
        """Pop up to ``limit`` samples of same-shaped requests, in priority order."""
        batch: list[Payload] = []
        size = 0
        key: object = None
        for index, q in self._ordered_queues():
            while q:
                p = q[0]
                if p.state != _QUEUED or p.queue != index:
                    q.popleft()
                    continue
                if batch and (p.shape_key != key or size + p.batch_size > limit):
                    break
                q.popleft()
                self._unqueue(p)
                p.state = _RUNNING
                batch.append(p)
                key = p.shape_key
                size += p.batch_size
                if size >= limit or not self._policy.combine:
                    return batch
        return batch

    def _scheduled(self) -> None:
        self._schedule_soon = False
        self._schedule(arrival=True)

    def _schedule(self, arrival: bool = False) -> None:
        """Dispatch batches while instances are free. ``arrival``: called once the requests that arrived in one
        event loop pass are queued (not on a batch's completion or a timer)."""
        while self._free and self._pending_samples > 0:
            batch = self._next_batch()
            if not batch:
                return
            alone = arrival and len(batch) == 1 and self._inflight == 0 and self._pending_samples == 0
            self._dispatch(self._free.pop(), batch, alone)

    def _next_batch(self) -> list[Payload] | None:
        policy = self._policy
        if not policy.combine:
            return self._take(1)
        total = self._pending_samples
        preferred = policy.preferred_batch_sizes
        full = total >= policy.max_batch_size or (preferred and total >= preferred[-1])
        if not full and policy.max_queue_delay_us:
            wait_until = self._oldest_enqueued() + policy.max_queue_delay_us / 1e6
            assert self._loop is not None
            now = time.monotonic()
            if now < wait_until:
                if self._delay_timer is None:
                    self._delay_timer = self._loop.call_later(wait_until - now, self._on_delay_timer)
                return None
        limit = policy.max_batch_size
        if preferred:
            fitting = [size for size in preferred if size <= total]
            if fitting:
                limit = fitting[-1]
        return self._take(limit)

    def _on_delay_timer(self) -> None:
        self._delay_timer = None
        self._schedule()

    # -- deadlines -------------------------------------------------------------------------------

    def _arm_deadline_timer(self, when: float) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        assert self._loop is not None
        self._deadline_at = when
        self._deadline_timer = self._loop.call_later(max(0.0, when - time.monotonic()), self._expire)

    def _expire(self) -> None:
        assert self._loop is not None
        self._deadline_timer = None
        self._deadline_at = float("inf")
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, p = heapq.heappop(self._deadlines)
            if p.state != _QUEUED or p.queue == _DELAYED_QUEUE:
                continue
            if p.delay_on_timeout:
                self._live[p.queue] -= 1
                p.queue = _DELAYED_QUEUE
                self._delayed.append(p)
                self._live_delayed += 1
                continue
            self._unqueue(p)
            assert p.future is not None
            if not p.future.done():
                waited_ms = (now - p.enqueued) * 1e3
                p.future.set_exception(
                    DeadlineExceeded(f"model '{self._name}': request timed out in the queue after {waited_ms:.1f} ms")
                )
            p.release()
        if self._deadlines:
            self._arm_deadline_timer(self._deadlines[0][0])
        self._check_idle()

    # -- execution -------------------------------------------------------------------------------

    def _dispatch(self, instance: int, batch: list[Payload], alone: bool = False) -> None:
        assert self._loop is not None
        now = time.monotonic()
        for p in batch:
            p.dispatched = now
        self._inflight += 1
        size = sum(p.batch_size for p in batch)
        if len(batch) > 1:
            self._batched_at = now
        if self._runs_inline(size) or (alone and self._runs_inline_alone(size, now)):
            result = self._run(instance, batch)
            self._complete(instance, batch, result, reschedule=False)
        else:
            self._work[instance].put(batch)

    def _floor(self, batch_size: int) -> float:
        """The measured compute time of a batch of this size (its bucket's floor); inf until one has run."""
        return self._compute_floor.get(batch_size.bit_length(), float("inf"))

    def _runs_inline(self, batch_size: int) -> bool:
        return self._floor(batch_size) < self._inline_compute_s

    def _runs_inline_alone(self, batch_size: int, now: float) -> bool:
        """A lone request on a model idle since the last batch: inline if its compute time is under the cap, the
        model has not batched requests together lately, and the loop thread itself idled longer than that compute
        time meanwhile (see :class:`Placement`). Under load the loop spends such a gap encoding and decoding other
        requests, and requests batch."""
        compute = self._floor(batch_size)
        if compute >= self._inline_alone_s or now - self._batched_at < _LONE_AFTER_S:
            return False
        loop_idle = (now - self._idle_since) - (time.thread_time() - self._idle_since_cpu)
        return compute < loop_idle

    def _worker(self, instance: int, work: queue.SimpleQueue[list[Payload] | None]) -> None:
        loop = self._loop
        assert loop is not None
        while (batch := work.get()) is not None:
            result = self._run(instance, batch)
            try:
                loop.call_soon_threadsafe(self._complete, instance, batch, result)
            except RuntimeError:  # loop closed during shutdown
                return

    def _run(self, instance: int, batch: list[Payload]) -> tuple[list[dict[str, NDArray[Any]]], Execution] | Exception:
        try:
            t0 = time.perf_counter()
            if len(batch) == 1:
                inputs = batch[0].inputs
            else:
                inputs = {
                    n: np.concatenate([p.inputs[n] for p in batch]) for n in self._input_names if n in batch[0].inputs
                }
            t1 = time.perf_counter()
            outputs = self._execute_fn(instance, inputs, self._output_names)
            t2 = time.perf_counter()
            if len(batch) == 1:
                per_request = [outputs]
            else:
                per_request = []
                offset = 0
                for p in batch:
                    end = offset + p.batch_size
                    per_request.append({n: a[offset:end] for n, a in outputs.items()})
                    offset = end
            t3 = time.perf_counter()
        except Exception as exc:
            log.exception("model '%s': batch of %d requests failed", self._name, len(batch))
            return exc
        size = sum(p.batch_size for p in batch)
        return per_request, Execution(size, len(batch), t1 - t0, t2 - t1, t3 - t2, t3)

    def _complete(
        self,
        instance: int,
        batch: list[Payload],
        result: tuple[list[dict[str, NDArray[Any]]], Execution] | Exception,
        reschedule: bool = True,
    ) -> None:
        if instance < self._instances:
            self._free.append(instance)
        elif instance in self._retiring:  # its last batch before a shrink ends it
            self._retiring.discard(instance)
            if not self._retiring:
                self._retired.set()
        self._inflight -= 1
        self._idle_since = now = time.monotonic()
        if self._inline_alone_s and now - self._batched_at >= _LONE_AFTER_S and not self._runs_inline(1):
            # The loop's CPU time (a system call) only where the lone-request rule can apply: skipped, the older
            # figure counts more CPU into the gap, so the rule errs towards the instance thread.
            self._idle_since_cpu = time.thread_time()
        if isinstance(result, Exception):
            error = InternalError(f"model '{self._name}': execution failed: {result}")
            for p in batch:
                p.state = _DONE
                if p.future is not None and not p.future.done():
                    p.future.set_exception(error)
                p.release()
        else:
            outputs, execution = result
            compute = execution.input_s + execution.infer_s + execution.output_s
            bucket = execution.batch_size.bit_length()
            self._compute_floor[bucket] = min(compute, self._compute_floor.get(bucket, float("inf")) * 1.05)
            self._on_execution(execution)
            for p, out in zip(batch, outputs):
                p.state = _DONE
                if p.trace is not None:
                    p.trace.execution = execution
                if p.future is not None and not p.future.done():
                    p.future.set_result(out)
                p.release()
        if reschedule:
            self._schedule()
        self._check_idle()

    def _check_idle(self) -> None:
        if self._inflight == 0 and self._pending_samples == 0:
            self._idle.set()
