"""gateway.yaml → Policy. Every problem is collected and reported with its line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import yaml

from . import values as v
from .model import (
    Backend,
    LimiterConfig,
    MetricsConfig,
    OnBackendError,
    Policy,
    Rate,
    Secret,
    ServerConfig,
    UpstreamConfig,
)
from .reader import Context, Field, PolicyError, Problem, compose_file
from .routes import parse_routes


def load_policy(
    path: str | Path, *, env: Mapping[str, str] | None = None, stub_upstream: bool = False
) -> Policy:
    """Read, interpolate and validate a policy file; raise PolicyError listing every problem."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([_whole_file_problem(path, f"cannot read policy file: {exc}")]) from None
    return parse_policy(source, file=str(path), env=env, stub_upstream=stub_upstream)


def parse_policy(
    source: str,
    *,
    file: str = "gateway.yaml",
    env: Mapping[str, str] | None = None,
    stub_upstream: bool = False,
) -> Policy:
    ctx = Context(file=file, env=os.environ if env is None else env)
    root = Field(ctx, compose_file(Path(file), source), "")
    top = root.mapping({"server", "upstream", "limiter", "metrics", "routes"})
    server = _server(top.get("server") or root.child(None, "server"))
    upstream = _upstream(top.get("upstream") or root.child(None, "upstream"))
    limiter = _limiter(top.get("limiter") or root.child(None, "limiter"))
    metrics = _metrics(top.get("metrics") or root.child(None, "metrics"))
    routes = parse_routes(top.get("routes") or root.child(None, "routes"), server, metrics)
    policy = Policy(file, server, upstream, limiter, metrics, routes, stub_upstream)
    _cross_checks(root, top, policy)
    if ctx.problems:
        raise PolicyError(sorted(ctx.problems, key=lambda p: p.line))
    return policy


def _whole_file_problem(path: Path, message: str) -> Problem:
    return Problem(str(path), 1, "(file)", message)


def _server(f: Field) -> ServerConfig:
    d = ServerConfig()
    fields = f.mapping(
        {"host", "port", "trusted_proxies", "max_body_bytes", "shutdown_grace_seconds",
         "drain_timeout_seconds", "keepalive_timeout_seconds", "max_header_bytes",
         "max_connections", "header_timeout_seconds", "body_timeout_seconds",
         "body_min_rate_bytes_per_second"}
    )  # fmt: skip
    proxies = fields.get("trusted_proxies")
    trusted = tuple(
        net for item in (proxies.items() if proxies else ()) if (net := v.try_parse(item, v.cidr))
    )
    return ServerConfig(
        host=v.get(fields, "host", v.nonempty, d.host),
        port=v.get(fields, "port", v.integer(0, 65535), d.port),
        trusted_proxies=trusted,
        max_body_bytes=v.get(fields, "max_body_bytes", v.integer(0, 1 << 30), d.max_body_bytes),
        shutdown_grace_seconds=v.get(
            fields, "shutdown_grace_seconds", v.number(0, 3600), d.shutdown_grace_seconds
        ),
        drain_timeout_seconds=v.get(
            fields, "drain_timeout_seconds", v.number(0, 3600), d.drain_timeout_seconds
        ),
        keepalive_timeout_seconds=v.get(
            fields, "keepalive_timeout_seconds", v.number(0, 3600), d.keepalive_timeout_seconds
        ),
        max_header_bytes=v.get(
            fields, "max_header_bytes", v.integer(1024, 1 << 20), d.max_header_bytes
        ),
        max_connections=v.get(
            fields, "max_connections", v.integer(1, 1_000_000), d.max_connections
        ),
        header_timeout_seconds=v.get(
            fields, "header_timeout_seconds", v.number(0.1, 3600), d.header_timeout_seconds
        ),
        body_timeout_seconds=v.get(
            fields, "body_timeout_seconds", v.number(0.1, 3600), d.body_timeout_seconds
        ),
        body_min_rate_bytes_per_second=v.get(
            fields,
            "body_min_rate_bytes_per_second",
            v.integer(1, 1 << 30),
            d.body_min_rate_bytes_per_second,
        ),
    )


def _upstream(f: Field) -> UpstreamConfig:
    d = UpstreamConfig()
    fields = f.mapping(
        {"base_url", "api_key", "api_key_file", "timeout_seconds", "retries", "max_rate",
         "max_connections"}
    )  # fmt: skip
    max_rate: Rate | None = d.max_rate
    if "max_rate" in fields:
        max_rate = _rate(fields["max_rate"]) if fields["max_rate"].present else None
    return UpstreamConfig(
        base_url=v.get(fields, "base_url", v.http_url, d.base_url),
        api_key=v.secret(fields, "api_key", f) or Secret(""),
        timeout_seconds=v.get(fields, "timeout_seconds", v.number(0.1, 600), d.timeout_seconds),
        retries=v.get(fields, "retries", v.integer(0, 10), d.retries),
        max_rate=max_rate,
        max_connections=v.get(fields, "max_connections", v.integer(1, 10000), d.max_connections),
    )


def _rate(f: Field) -> Rate | None:
    fields = f.mapping({"requests", "per"})
    requests = v.need(f, fields, "requests", v.integer(1, 10**9))
    per = v.need(f, fields, "per", v.duration_seconds)
    return Rate(requests, per) if requests and per else None


def _limiter(f: Field) -> LimiterConfig:
    d = LimiterConfig()
    fields = f.mapping(
        {"backend", "redis_url", "redis_url_file", "on_backend_error", "key_prefix",
         "timeout_seconds", "max_tracked_keys"}
    )  # fmt: skip
    return LimiterConfig(
        backend=v.get(fields, "backend", v.one_of(Backend, list(Backend)), d.backend),
        redis_url=v.secret(fields, "redis_url", f) or d.redis_url,
        on_backend_error=v.get(
            fields,
            "on_backend_error",
            v.one_of(OnBackendError, list(OnBackendError)),
            d.on_backend_error,
        ),
        key_prefix=v.get(fields, "key_prefix", v.nonempty, d.key_prefix),
        timeout_seconds=v.get(fields, "timeout_seconds", v.number(0.001, 10), d.timeout_seconds),
        max_tracked_keys=v.get(
            fields, "max_tracked_keys", v.integer(1000, 100_000_000), d.max_tracked_keys
        ),
    )


def _metrics(f: Field) -> MetricsConfig:
    fields = f.mapping({"path"})
    return MetricsConfig(path=v.get(fields, "path", v.url_path, MetricsConfig().path))


def _cross_checks(root: Field, top: dict[str, Field], policy: Policy) -> None:
    needs_key = any(r.kind.is_token for r in policy.routes) and not policy.stub_upstream
    if not needs_key or policy.upstream.api_key:
        return
    up = top.get("upstream") or root.child(None, "upstream")
    if any(p.path.startswith(f"{up.path}.api_key") for p in root.ctx.problems):
        return  # already reported: a missing variable, an unreadable file, both keys given
    # Point at `api_key:` when it is there but empty (`${OPENAI_API_KEY:-}`), else at `upstream:`.
    pairs = up.node.value if isinstance(up.node, yaml.MappingNode) else []
    key_lines = [
        k.start_mark.line + 1
        for k, _ in pairs
        if isinstance(k, yaml.ScalarNode) and k.value == "api_key"
    ]
    up.child(None, "api_key", key_lines[0] if key_lines else up.line).problem(
        "an OpenAI API key is required by token routes (api_key or api_key_file), "
        "unless the gateway runs with --stub-upstream"
    )
