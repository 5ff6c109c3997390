"""Command line: `serve` runs the gateway, `check` validates a policy, `schema` prints the
policy file's JSON Schema. argv → policy → run."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from .app import create_app
from .compiled_policy import ACTIVE_POLICY
from .gc_tuning import tune_gc
from .listener import open_listener
from .logs import redact_secrets, setup_logging
from .policy import (
    Policy,
    PolicyError,
    effective_policy,
    load_policy,
    policy_schema,
    policy_warnings,
    secrets_in,
)
from .reload import PolicyFile
from .routes.ops import LIFECYCLE, ops_app

log = logging.getLogger("gateway")
# The ops listener's in-flight requests (probes, scrapes) are short.
_OPS_SHUTDOWN_SECONDS = 2.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatkit-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_p = sub.add_parser("serve", help="run the gateway")
    serve_p.add_argument("--config", required=True, type=Path, help="policy file (gateway.yaml)")
    serve_p.add_argument(
        "--stub-upstream",
        action="store_true",
        help="answer token routes from a built-in fake OpenAI (offline widget work)",
    )
    serve_p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="least severe level logged (default INFO)",
    )
    check_p = sub.add_parser("check", help="validate a policy and print the effective one")
    check_p.add_argument("--config", required=True, type=Path)
    check_p.add_argument("--stub-upstream", action="store_true")
    check_p.add_argument(
        "--skip-secret-files",
        action="store_true",
        help="check everything but that the *_file secrets exist and can be read "
        "(CI without the production secrets)",
    )
    check_p.add_argument(
        "--online",
        action="store_true",
        help="also ask the upstream, with the policy's key, about each agent route's models "
        "(shutdown dates; exit 1 when one is not served)",
    )
    sub.add_parser("schema", help="print the JSON Schema of the policy file")
    ingest_p = sub.add_parser("ingest", help="fetch and index the pages of knowledge routes")
    ingest_p.add_argument("--config", required=True, type=Path)
    ingest_p.add_argument("--route", help="only this route (default: every knowledge route)")
    talks = sub.add_parser("conversations", help="export an agent route's threads (SPEC §10)")
    talks.add_argument("--config", required=True, type=Path)
    talks.add_argument("--route", required=True, help="the chatkit_agent route")
    talks.add_argument("--since", help="only threads active this recently: 7d, 12h, …")
    talks.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    talks.add_argument("--output", type=Path, help="write here instead of stdout")
    talks.add_argument(
        "--summary", action="store_true", help="per-day counts instead of the threads"
    )
    args = parser.parse_args(argv)

    if args.command == "check":
        if args.online and (args.stub_upstream or args.skip_secret_files):
            check_p.error("--online asks the upstream with the policy's own key: not with "
                          "--stub-upstream or --skip-secret-files")  # fmt: skip
        status = _check(args.config, args.stub_upstream, not args.skip_secret_files)
        if status or not args.online:
            return status
        from .check_online import check_models

        return asyncio.run(check_models(load_policy(args.config), args.config))
    if args.command == "schema":
        sys.stdout.write(json.dumps(policy_schema(), indent=2) + "\n")
        return 0
    if args.command == "ingest":
        from .knowledge.ingest_cli import run

        return run(args.config, args.route)
    if args.command == "conversations":
        from .agent.export_cli import run as export

        return export(args.config, args.route, args.since, args.format, args.output, args.summary)
    setup_logging(args.log_level)
    if args.stub_upstream:
        log.warning(
            "stub upstream: token routes answer with fake ek_stub_ secrets, OpenAI is not called"
        )
    if not args.config.exists():
        log.error("no policy file", extra={"detail": _no_policy_hint(args.config)})
        return 2
    try:
        policy = load_policy(args.config, stub_upstream=args.stub_upstream)
    except PolicyError as exc:
        for problem in exc.problems:
            log.error("invalid policy", extra={"detail": str(problem)})
        return 2
    redact_secrets(secrets_in(policy))  # from here on, no log line shows them
    for warning in policy_warnings(policy):
        log.warning("policy warning", extra={"detail": warning})
    _use_uvloop()
    tune_gc()
    return asyncio.run(serve(policy, args.config))


def _no_policy_hint(path: Path) -> str:
    """What to give when the policy is missing: the image's default command lands here
    until a policy is mounted (README, "One server")."""
    return (
        f"{path} does not exist. Give your policy with --config, or in a container mount it "
        f"there: docker run -v /srv/chatkit-gateway/gateway.yaml:{path}:ro ... "
        "(an example: /usr/share/chatkit-gateway/gateway.example.yaml in the image). "
        "Its OpenAI key: upstream.api_key_file: /run/secrets/openai-api-key with the key "
        "mounted there, or api_key: ${OPENAI_API_KEY} with -e OPENAI_API_KEY"
    )


def _check(path: Path, stub: bool, read_secret_files: bool) -> int:
    try:
        policy = load_policy(path, stub_upstream=stub, read_secret_files=read_secret_files)
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    for warning in policy_warnings(policy):
        print(f"{path}: warning: {warning}", file=sys.stderr)
    sys.stdout.write(effective_policy(policy))
    return 0


def _raise_open_files_limit(max_connections: int) -> None:
    """Each connection is a file descriptor: lift the soft limit toward the hard one so
    that `server.max_connections` (plus upstream sockets and files) fits, or say so."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    wanted = max_connections + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "open files limit is low",
            extra={
                "detail": f"ulimit -n is {soft}; server.max_connections={max_connections} "
                f"needs about {wanted}: connections beyond it fail to be accepted"
            },
        )


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(policy: Policy, path: Path) -> int:
    """Run until SIGTERM/SIGINT, then drain: not ready at once, serving for the grace.

    The exit status: 0 after a drain, 1 when the address cannot be bound.
    """
    app = create_app(policy)
    server = policy.server
    _raise_open_files_limit(server.max_connections)
    # After the grace the listener closes; in-flight requests and streams get
    # drain_timeout_seconds. With server.ops_port, the probes and metrics have a listener
    # (and connection caps) of their own, opened first: they answer before the public port.
    ops_runner: web.AppRunner | None = None
    try:
        if server.ops_port is not None:
            port = server.ops_port
            ops_runner, _ = await open_listener(
                ops_app(app), server.host, port, shutdown_timeout=_OPS_SHUTDOWN_SECONDS
            )
        port = server.port
        runner, _ = await open_listener(
            app, server.host, port, shutdown_timeout=server.drain_timeout_seconds, use_tls=True
        )
    except OSError as exc:
        log.error("cannot listen", extra={"detail": f"{server.host}:{port}: {exc.strerror or exc}"})
        if ops_runner is not None:
            await ops_runner.cleanup()
        return 1
    log.info(
        "listening",
        extra={
            "detail": f"{'https' if server.tls else 'http'}://{server.host}:{server.port} routes="
            + ",".join(f"{r.name}:{r.path}" for r in policy.routes)
            + (" upstream=stub" if policy.stub_upstream else " upstream=openai")
            + (f" ops=http://{server.host}:{server.ops_port}" if ops_runner is not None else "")
        },
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    policy_file = PolicyFile(app, path)
    loop.add_signal_handler(signal.SIGHUP, policy_file.reload)
    watcher = asyncio.create_task(policy_file.watch())
    try:
        await stop.wait()
        stop.clear()
        app[LIFECYCLE].draining = True
        # The grace of the policy in force now: a reload may have changed it.
        grace = app[ACTIVE_POLICY].current.policy.server.shutdown_grace_seconds
        log.info("draining", extra={"detail": f"not ready; serving {grace:g}s more"})
        # A second SIGTERM/SIGINT cuts the drain short.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), grace)
    finally:
        watcher.cancel()
        await runner.cleanup()
        if ops_runner is not None:  # probes and scrapes answered through the whole drain
            await ops_runner.cleanup()
        log.info("stopped")
    return 0
