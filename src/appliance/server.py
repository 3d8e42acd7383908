"""Running the appliance: the data plane with its REST and gRPC endpoints in one event loop.

Lifecycle: models load, then both endpoints open. On SIGTERM or SIGINT the data plane stops accepting
inference (readiness goes false, new requests get 503 / UNAVAILABLE), every accepted request is drained for up
to ``exit_timeout_secs``, then both endpoints close and the models unload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from functools import partial

import grpc
import uvicorn

from .backends import factory_for
from .core.dataplane import DataPlane
from .core.history import DeviceFigures
from .core.logbuffer import RecentLogs
from .device.jetson import DeviceTelemetry
from .device.metrics import DeviceMetrics
from .grpc.service import create_server
from .process import set_up as set_up_process
from .rest.app import create_app
from .settings import Settings
from .systemd.notify import Notifier
from .tracing import Tracing
from .tracing import setup as setup_tracing

log = logging.getLogger(__name__)

#: How long a stopping server keeps answering after the drain, so requests queued inside gRPC reach a handler.
SETTLE_SECS = 0.5


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the appliance decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _figures(device: DeviceMetrics) -> DeviceFigures:
    """What the history keeps of a device sample (the core knows nothing of the device's types)."""
    s = device.sample()
    memory = s.memory
    return DeviceFigures(
        gpu_load=s.gpu.load if s.gpu is not None else None,
        temperature_c=max((z.celsius for z in s.thermal), default=None),
        board_power_w=s.board_power_watts,
        memory_used_bytes=None if memory is None else memory.total_bytes - memory.available_bytes,
        power_mode=None if s.power_mode is None else (s.power_mode.name or str(s.power_mode.id)),
        throttling=tuple(z.name for z in s.thermal if z.throttling),
    )


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Appliance:
    """The running server. ``await start()``, then ``await wait_stopped()``; ``request_stop()`` begins the drain."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dataplane = DataPlane(settings, factory_for)
        self.device: DeviceMetrics | None = None
        if settings.device_telemetry:
            self.device = DeviceMetrics(DeviceTelemetry(settings.device_root))
            self.dataplane.metrics.registry.register(self.device)
            self.dataplane.history.device = partial(_figures, self.device)
        self.http_port = 0
        self.grpc_port = 0
        self._stop = asyncio.Event()
        self._uvicorn: _Uvicorn | None = None
        self._uvicorn_task: asyncio.Task[None] | None = None
        self._grpc: grpc.aio.Server | None = None
        self.tracing: Tracing | None = None
        self.systemd = Notifier()  # READY=1, the watchdog, STOPPING=1 (under Type=notify)
        self.logs = RecentLogs()  # the newest log lines, for the support bundle (attached while serving)

    def _report_boot(self) -> None:
        """Put what this boot found on the data partition, and decided about an update, on the timeline; a data
        partition that is missing or had to be made again is an error in the log too."""
        from .datapart import HEALTHY, read_state
        from .update.confirm import UpdateRecord

        events = self.dataplane.events
        data = read_state(self.settings.data_state_file)
        if data is not None:
            events.add("data_partition", "", f"data partition {data.get('state')}: {data.get('message')}", **data)
            if data.get("state") not in HEALTHY:
                log.error("data partition %s: %s", data.get("state"), data.get("message"))
        if self.settings.update_dir is not None:
            boot = UpdateRecord(self.settings.update_dir).last_boot()
            if boot is not None:
                events.add("update", "", f"boot on slot {boot.get('slot')}: {boot.get('message')}", **boot)

    async def start(self) -> None:
        s = self.settings
        # Off (no extra, no OTLP endpoint): None, and OpenTelemetry is never imported
        self.tracing = self.dataplane.tracer = setup_tracing()
        logging.getLogger().addHandler(self.logs)
        self._report_boot()
        await self.dataplane.start()
        if s.allow_grpc:
            server = self._grpc = create_server(self.dataplane, s.max_request_bytes)
            try:
                self.grpc_port = server.add_insecure_port(f"{_host(s.grpc_address)}:{s.grpc_port}")
            except RuntimeError:
                self.grpc_port = 0
            if not self.grpc_port:
                raise OSError(f"cannot bind gRPC to {s.grpc_address}:{s.grpc_port}")
            await server.start()
        if s.allow_http:
            sock = _bind(s.http_address, s.http_port)
            self.http_port = sock.getsockname()[1]
            config = uvicorn.Config(
                create_app(self.dataplane, s.max_request_bytes, s.websocket_max_in_flight, self.device, self.logs),
                ws_max_size=s.max_request_bytes,  # a larger WebSocket message closes the socket (1009)
                log_level=s.log_level if s.log_level != "debug" else "debug",
                access_log=s.log_level == "debug",
                lifespan="off",
                timeout_graceful_shutdown=max(1, int(s.exit_timeout_secs)),
            )
            self._uvicorn = _Uvicorn(config)
            self._uvicorn_task = asyncio.create_task(self._uvicorn.serve(sockets=[sock]))
            while not self._uvicorn.started:
                if self._uvicorn_task.done():
                    self._uvicorn_task.result()
                    raise OSError("REST server stopped while starting")
                await asyncio.sleep(0.01)
        models = [
            f"{r.name}/{r.version or '-'}:{r.state.value if r.state else ''}" for r in self.dataplane.repository_index()
        ]
        log.info(
            "appliance ready: REST on %s:%s, gRPC on %s:%s, models %s",
            s.http_address,
            self.http_port or "-",
            s.grpc_address,
            self.grpc_port or "-",
            models,
        )
        ready = sum(1 for m in models if m.endswith(":READY"))
        self.systemd.ready(f"serving {ready} of {len(models)} model versions")

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()
        self.systemd.stopping()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.exit_timeout_secs
        log.info("stopping: draining accepted requests (up to %.0f s)", self.settings.exit_timeout_secs)
        drained = await self.dataplane.drain(self.settings.exit_timeout_secs)
        if drained:
            # Requests sent before the signal may still wait inside gRPC, below our handlers: stopping the gRPC
            # server now would cancel them. Keep answering (new inference gets UNAVAILABLE) for a moment so
            # each reaches a handler, then let whatever was accepted meanwhile finish.
            await asyncio.sleep(max(0.0, min(SETTLE_SECS, deadline - loop.time())))
            drained = await self.dataplane.drain(max(0.0, deadline - loop.time()))
        if self._grpc is not None:
            await self._grpc.stop(grace=max(0.0, deadline - loop.time()) if drained else 0)
        if self._uvicorn is not None and self._uvicorn_task is not None:
            self._uvicorn.should_exit = True
            await self._uvicorn_task
        if drained:
            await self.dataplane.stop()
        else:
            # Unloading drains each batcher, which would wait for the executions still running past the exit
            # timeout; their threads are daemons, so leave them to the process exit instead.
            log.warning("exit timeout reached: exiting without waiting for the requests still running")
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # exports the spans still buffered
        log.info("stopped")
        logging.getLogger().removeHandler(self.logs)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain and return."""
    set_up_process(settings)
    appliance = Appliance(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, appliance.request_stop)
    await appliance.start()
    await appliance.wait_stopped()
