"""The ``appliance`` command: ``serve``, ``demo-repository``, ``keys``, ``autoscale``, ``power-mode``, ``update``,
``data``, ``optimize``.

Flags that ``tritonserver`` also has keep its names (``--model-repository``, ``--http-port``, ``--grpc-port``,
``--model-control-mode``, ``--repository-poll-secs``, ``--load-model``, ``--exit-timeout-secs``,
``--cache-config``). Every flag is also a setting: see :mod:`appliance.settings` for the environment variables
and the config file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from .datapart import add_parser as data_parser
from .settings import (
    ENV_PREFIX,
    CpuSchedulingPolicy,
    MetricsAccess,
    ModelControlMode,
    Settings,
    SettingsError,
    join_cache_configs,
    load_settings,
)
from .update.cli import add_parser as update_parser


def _doc(name: str) -> str:
    """A setting's documentation, from the docstring under its field, plus its environment variable."""
    import ast
    import inspect

    source = inspect.getsource(Settings)
    tree = ast.parse(source)
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) == name:
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
                text = " ".join(str(following.value.value).replace("``", "").split())
                return f"{text} (env {ENV_PREFIX}{name.upper()})"
    return f"(env {ENV_PREFIX}{name.upper()})"


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance",
        description="ML Inference Appliance: serve models over the Open Inference Protocol (KServe v2) "
        "on REST and gRPC, with dynamic batching.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="serve the models of a model repository over REST and gRPC",
        description="Serve a Triton-layout model repository over REST and gRPC until SIGTERM, then drain.",
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML config file with any of the settings below (env APPLIANCE_CONFIG)",
    )
    serve.add_argument("--model-repository", type=Path, metavar="DIR", help=_doc("model_repository"))
    serve.add_argument(
        "--model-control-mode", choices=[m.value for m in ModelControlMode], help=_doc("model_control_mode")
    )
    serve.add_argument("--repository-poll-secs", type=float, metavar="SECONDS", help=_doc("repository_poll_secs"))
    serve.add_argument("--load-model", action="append", metavar="NAME", help=_doc("load_model") + "; repeatable")
    serve.add_argument("--http-address", metavar="ADDR", help=_doc("http_address"))
    serve.add_argument("--http-port", type=int, metavar="PORT", help=_doc("http_port"))
    serve.add_argument("--grpc-address", metavar="ADDR", help=_doc("grpc_address"))
    serve.add_argument("--grpc-port", type=int, metavar="PORT", help=_doc("grpc_port"))
    serve.add_argument("--allow-http", type=_bool, metavar="BOOL", help=_doc("allow_http"))
    serve.add_argument("--allow-grpc", type=_bool, metavar="BOOL", help=_doc("allow_grpc"))
    serve.add_argument("--exit-timeout-secs", type=float, metavar="SECONDS", help=_doc("exit_timeout_secs"))
    serve.add_argument("--park-wake-timeout-s", type=float, metavar="SECONDS", help=_doc("park_wake_timeout_s"))
    serve.add_argument("--history-interval-s", type=float, metavar="SECONDS", help=_doc("history_interval_s"))
    serve.add_argument("--history-keep-s", type=float, metavar="SECONDS", help=_doc("history_keep_s"))
    serve.add_argument("--history-file", type=Path, metavar="FILE", help=_doc("history_file"))
    serve.add_argument("--max-request-bytes", type=int, metavar="BYTES", help=_doc("max_request_bytes"))
    serve.add_argument("--websocket-max-in-flight", type=int, metavar="N", help=_doc("websocket_max_in_flight"))
    serve.add_argument("--image-max-pixels", type=int, metavar="PIXELS", help=_doc("image_max_pixels"))
    serve.add_argument("--intra-op-thread-count", type=int, metavar="N", help=_doc("intra_op_thread_count"))
    serve.add_argument("--ort-allow-spinning", type=_bool, metavar="BOOL", help=_doc("ort_allow_spinning"))
    serve.add_argument(
        "--cpu-scheduling-policy",
        choices=[p.value for p in CpuSchedulingPolicy],
        help=_doc("cpu_scheduling_policy"),
    )
    serve.add_argument("--inline-compute-us", type=int, metavar="US", help=_doc("inline_compute_us"))
    serve.add_argument("--inline-alone-compute-us", type=int, metavar="US", help=_doc("inline_alone_compute_us"))
    serve.add_argument(
        "--cache-config",
        action="append",
        metavar="local,size=BYTES|redis,host=HOST,port=PORT",
        help=_doc("cache_config"),
    )
    serve.add_argument("--routes-file", type=Path, metavar="FILE", help=_doc("routes_file"))
    serve.add_argument("--auth", type=_bool, metavar="BOOL", help=_doc("auth"))
    serve.add_argument("--keys-file", type=Path, metavar="FILE", help=_doc("keys_file"))
    serve.add_argument(
        "--jwt-public-key",
        dest="jwt_public_keys",
        action="append",
        type=Path,
        metavar="FILE",
        help=_doc("jwt_public_keys") + "; repeatable",
    )
    serve.add_argument("--jwt-jwks-file", type=Path, metavar="FILE", help=_doc("jwt_jwks_file"))
    serve.add_argument("--jwt-allow-hs256", type=_bool, metavar="BOOL", help=_doc("jwt_allow_hs256"))
    serve.add_argument("--jwt-hs256-secret-file", type=Path, metavar="FILE", help=_doc("jwt_hs256_secret_file"))
    serve.add_argument("--jwt-audience", metavar="AUD", help=_doc("jwt_audience"))
    serve.add_argument("--jwt-issuer", metavar="ISS", help=_doc("jwt_issuer"))
    serve.add_argument("--jwt-leeway-s", type=float, metavar="SECONDS", help=_doc("jwt_leeway_s"))
    serve.add_argument("--jwt-role-claim", metavar="CLAIM", help=_doc("jwt_role_claim"))
    serve.add_argument("--metrics-access", choices=[m.value for m in MetricsAccess], help=_doc("metrics_access"))
    serve.add_argument("--rate-limit-rps", type=float, metavar="RPS", help=_doc("rate_limit_rps"))
    serve.add_argument("--rate-limit-burst", type=int, metavar="N", help=_doc("rate_limit_burst"))
    serve.add_argument("--audit-log-file", type=Path, metavar="FILE", help=_doc("audit_log_file"))
    serve.add_argument("--audit-log-max-bytes", type=int, metavar="BYTES", help=_doc("audit_log_max_bytes"))
    serve.add_argument("--device-telemetry", type=_bool, metavar="BOOL", help=_doc("device_telemetry"))
    serve.add_argument("--device-root", type=Path, metavar="DIR", help=_doc("device_root"))
    serve.add_argument("--triton-url", metavar="HOST:PORT", help=_doc("triton_url"))
    serve.add_argument("--triton-check-interval-s", type=float, metavar="SECONDS", help=_doc("triton_check_interval_s"))
    serve.add_argument("--build-id", metavar="ID", help=_doc("build_id"))
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help=_doc("log_level"))

    demo = sub.add_parser(
        "demo-repository",
        help="write a demo model repository (a tiny MLP and an image classifier CNN, seeded ONNX models)",
        description="Write the demo models 'mlp' ([B,64] -> [B,10]) and 'cnn' ([B,3,64,64] -> [B,10], with "
        "labels) into DIR, in Triton's layout with their config.pbtxt.",
    )
    demo.add_argument("directory", type=Path, metavar="DIR", help="folder to write (created if missing)")
    _keys_parser(sub)
    _autoscale_parser(sub)
    update_parser(sub)
    data_parser(sub)
    sub.add_parser(
        "optimize",
        add_help=False,
        help="build and verify TensorRT engines (trt-optimize; see 'appliance optimize --help')",
    )
    return parser


def _duration(text: str) -> Any:
    from .core.auth.keys import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
        return value

    return parse


def _keys_parser(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", help="TOML config file (env APPLIANCE_CONFIG)")
    common.add_argument("--keys-file", type=Path, metavar="FILE", help=_doc("keys_file"))
    keys = sub.add_parser(
        "keys",
        help="create, list and revoke API keys (with --auth true)",
        description="API keys for --auth true. The key file keeps hashes only: a key is shown once, at creation. "
        "A running server follows the file, so a revoked key stops working within a second.",
    )
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[common], help="make a key and print it (once)")
    create.add_argument("--role", required=True, choices=["admin", "infer", "read"], help="what the key may do")
    create.add_argument("--name", help="the key's name, in the audit log and metrics (default: ROLE-ID)")
    create.add_argument("--expires", type=_duration, metavar="DURATION", help="lifetime: 90d, 12h, 2w; default never")
    create.add_argument("--rate", type=_positive(float), metavar="RPS", help="requests per second (rate_limit_rps)")
    create.add_argument("--burst", type=_positive(int), metavar="N", help="requests at once above the rate")
    create.add_argument(
        "--key-out",
        type=Path,
        metavar="FILE",
        help="write the key to FILE (new, mode 0600, owned by the caller) instead of printing it; "
        "the image's first boot uses it for the admin key",
    )
    actions.add_parser("list", parents=[common], help="the keys: name, role, created, expires, revoked")
    revoke = actions.add_parser("revoke", parents=[common], help="revoke the key of a name")
    revoke.add_argument("name", metavar="NAME")


def _keys(args: argparse.Namespace) -> int:
    import getpass

    from .core.auth.audit import AuditLog
    from .core.auth.keys import create_key, read_keys, revoke_key
    from .core.auth.roles import Operation, Role
    from .core.files import create_secret

    prog = f"appliance keys {args.keys_command}"
    try:
        settings = load_settings(args.config, keys_file=args.keys_file)
    except SettingsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    path = settings.keys_file
    audit = AuditLog(settings.audit_log_file, settings.audit_log_max_bytes) if settings.audit_log_file else None
    who = f"cli:{getpass.getuser()}"
    try:
        if args.keys_command == "create":
            if args.key_out is not None and args.key_out.exists():
                print(f"{prog}: --key-out {args.key_out}: the file exists; no key was created", file=sys.stderr)
                return 1
            key, record = create_key(path, Role.parse(args.role), args.name, args.expires, args.rate, args.burst)
            if audit:
                audit.record(who, "local", Operation.KEY_CREATE.value, record.name, "ok")
            expires = record.expires.isoformat() if record.expires else "never"
            if args.key_out is None:
                print(key)
                shown = "it is shown only this once"
            else:
                try:
                    create_secret(args.key_out, key + "\n")
                except OSError as exc:
                    revoke_key(path, record.name)
                    print(
                        f"{prog}: --key-out {args.key_out}: {exc.strerror or exc}; the key was revoked", file=sys.stderr
                    )
                    return 1
                shown = f"the key is in {args.key_out} (mode 0600)"
            print(
                f"created key '{record.name}' (role {record.role.label}, expires {expires}) in {path}; {shown}",
                file=sys.stderr,
            )
        elif args.keys_command == "revoke":
            for record in revoke_key(path, args.name):
                if audit:
                    audit.record(who, "local", Operation.KEY_REVOKE.value, record.name, "ok")
                print(f"revoked key '{record.name}' ({record.id}) in {path}", file=sys.stderr)
        else:
            rows: list[tuple[str, ...]] = [("NAME", "ROLE", "CREATED", "EXPIRES", "REVOKED", "RATE")]
            for r in sorted(read_keys(path).values(), key=lambda r: r.created):
                rate = f"{r.rate:g}/s burst {r.burst or '-'}" if r.rate else "-"
                when = [t.isoformat() if t else "-" for t in (r.created, r.expires, r.revoked)]
                rows.append((r.name, r.role.label, *when, rate))
            widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
            for row in rows:
                print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    except ValueError as exc:  # KeyFileError too: it names the file
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: key file {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _autoscale_parser(sub: Any) -> None:
    autoscale = sub.add_parser(
        "autoscale",
        help="the autoscaler daemon: model instances (and the power mode) from load, through the admin API",
        description="Look at the service's metrics every interval_s and set each configured model's instances "
        "from its in-flight requests, p95 latency and the GPU load, through the admin API only; step the nvpmodel "
        "power mode where [power] is enabled. Every decision is logged and reported to the service "
        "(GET /v2/autoscaler/decisions). Runs until SIGTERM. Exit 2: the configuration is refused.",
    )
    autoscale.add_argument("--config", type=Path, required=True, metavar="FILE", help="autoscaler.toml")
    autoscale.add_argument(
        "--admin-key-file",
        type=Path,
        metavar="FILE",
        help="a file holding an admin API key (the image hands it over as a systemd credential); "
        "none: the service runs with auth off",
    )
    autoscale.add_argument("--dry-run", action="store_true", help="decide and log, change nothing (or dry_run = true)")
    autoscale.add_argument(
        "--power-request-file",
        type=Path,
        default=Path("/run/appliance-autoscaler/power-mode"),
        metavar="FILE",
        help="where a power mode request is written for appliance-power-mode.path (default: %(default)s)",
    )
    autoscale.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    power = sub.add_parser(
        "power-mode",
        help="apply the autoscaler's power mode request with nvpmodel (root; appliance-power-mode.service)",
        description="Read the mode number in REQUEST and apply it with 'nvpmodel -m N' if the [power] table of "
        "CONFIG enables stepping and lists the mode; refuse anything else. Exit 0 applied, 2 refused, 1 nvpmodel "
        "failed.",
    )
    power.add_argument("--config", type=Path, required=True, metavar="FILE", help="autoscaler.toml")
    power.add_argument("--request", type=Path, required=True, metavar="FILE", help="the request file")
    power.add_argument("--nvpmodel", type=Path, default=Path("/usr/sbin/nvpmodel"), metavar="PATH")


def _autoscale(args: argparse.Namespace) -> int:
    import dataclasses
    import signal
    import threading

    from .scaling.client import AdminClient
    from .scaling.config import ConfigError, load_config
    from .scaling.daemon import Autoscaler
    from .scaling.power import request_mode

    prog = "appliance autoscale"
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        config = dataclasses.replace(config, dry_run=True)
    key = None
    if args.admin_key_file is not None:
        try:
            key = args.admin_key_file.read_text().strip()
        except OSError as exc:
            print(f"{prog}: admin key file {args.admin_key_file}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    logging.getLogger("appliance.autoscaler").info(
        "autoscaling %s on %s every %g s%s",
        ", ".join(config.model_policies()) or "no model",
        config.service_url,
        config.interval_s,
        " (dry run)" if config.dry_run else "",
    )
    try:
        path = args.power_request_file
        Autoscaler(config, AdminClient(config.service_url, key), power_request=lambda m: request_mode(m, path)).run(
            stop
        )
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return 0


def _power_mode(args: argparse.Namespace) -> int:
    from .scaling.power import apply_request

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    return apply_request(args.config, args.request, args.nvpmodel)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["optimize"]:
        from .optimize.cli import main as optimize_main

        return optimize_main(argv[1:], prog="appliance optimize")
    args = build_parser().parse_args(argv)
    if args.command == "demo-repository":
        from .demo import write_demo_repository

        try:
            for folder in write_demo_repository(args.directory):
                print(f"wrote {folder}")
        except OSError as exc:
            print(f"appliance demo-repository: {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 1
        return 0

    if args.command == "keys":
        return _keys(args)
    if args.command == "autoscale":
        return _autoscale(args)
    if args.command == "power-mode":
        return _power_mode(args)
    if args.command == "update":
        from .update.cli import main as update_main

        return update_main(args)
    if args.command == "data":
        from .datapart import main as data_main

        return data_main(args)

    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    try:
        if args.cache_config is not None:
            flags["cache_config"] = join_cache_configs(args.cache_config)
        settings = load_settings(args.config, **flags)
    except SettingsError as exc:
        print(f"appliance serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .server import serve

    try:
        import uvloop  # the faster event loop, when installed; grpc.aio and uvicorn both run on it

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(settings))
    except OSError as exc:
        print(f"appliance serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
