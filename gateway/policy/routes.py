"""The `routes:` section of a policy: each route's keys, checked against its kind."""

from __future__ import annotations

import dataclasses
from typing import Any

from . import values as v
from .model import (
    LimitKey,
    MetricsConfig,
    RateLimit,
    RealtimeOptions,
    Route,
    RouteKind,
    Secret,
    ServerConfig,
    SessionOptions,
    UserIdConfig,
    UserIdSource,
)
from .reader import Field, Invalid

# The request types of the ChatKit server protocol (openai-chatkit `types.py`).
CHATKIT_STREAMING_TYPES = frozenset(
    {
        "threads.create",
        "threads.add_user_message",
        "threads.add_client_tool_output",
        "threads.add_structured_input",
        "threads.retry_after_item",
        "threads.custom_action",
    }
)
CHATKIT_TYPES = CHATKIT_STREAMING_TYPES | {
    "threads.get_by_id",
    "threads.list",
    "threads.update",
    "threads.delete",
    "threads.sync_custom_action",
    "items.list",
    "items.feedback",
    "attachments.create",
    "attachments.delete",
    "input.transcribe",
}
# RFC 9110 §7.6.1 connection-specific fields, never forwarded by a proxy.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
     "transfer-encoding", "upgrade", "proxy-connection"}
)  # fmt: skip
OPS_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})

_ROUTE_KEYS = {
    "name", "path", "kind", "allowed_origins", "allow_missing_origin", "rate_limits",
    "max_body_bytes", "cors_max_age_seconds", "user_id",
}  # fmt: skip
_KIND_KEYS: dict[RouteKind, set[str]] = {
    RouteKind.CHATKIT_SESSION: {"workflow_id", "session"},
    RouteKind.REALTIME_CLIENT_SECRET: {"realtime"},
    RouteKind.CHATKIT_PROXY: {
        "target", "stream_idle_timeout_seconds", "max_streams_per_client", "upstream_headers",
    },
}  # fmt: skip
_ALL_KIND_KEYS = set().union(*_KIND_KEYS.values())


def parse_routes(f: Field, server: ServerConfig, metrics: MetricsConfig) -> tuple[Route, ...]:
    routes: list[Route] = []
    seen_names: dict[str, int] = {}
    seen_paths: dict[str, int] = {}
    reserved = OPS_PATHS | {metrics.path}
    for item in f.items():
        route, fields = _route(item, server)
        if route is None:
            continue
        name_f, path_f = fields["name"], fields["path"]
        if route.name in seen_names:
            name_f.problem(
                f"route name {route.name!r} is already used (line {seen_names[route.name]})"
            )
        if route.path in seen_paths:
            path_f.problem(
                f"route path {route.path!r} is already used (line {seen_paths[route.path]})"
            )
        if route.path in reserved:
            path_f.problem(f"{route.path!r} is reserved for operations endpoints")
        seen_names.setdefault(route.name, name_f.line)
        seen_paths.setdefault(route.path, path_f.line)
        routes.append(route)
    if not routes and not f.ctx.problems:
        f.problem("at least one route is required")
    return tuple(routes)


def _route(f: Field, server: ServerConfig) -> tuple[Route | None, dict[str, Field]]:
    fields = f.mapping(_ROUTE_KEYS | _ALL_KIND_KEYS)
    name = v.need(f, fields, "name", v.name)
    path = v.need(f, fields, "path", v.url_path)
    kind = v.need(f, fields, "kind", v.one_of(RouteKind, list(RouteKind)))
    if kind is not None:
        for key in sorted(_ALL_KIND_KEYS - _KIND_KEYS[kind]):
            if key in fields:
                fields[key].problem(f"not used by routes of kind {kind}")
    origins_field = fields.get("allowed_origins")
    origins = frozenset(
        o
        for item in (origins_field.items() if origins_field else ())
        if (o := v.try_parse(item, v.origin))
    )
    allow_missing = v.get(fields, "allow_missing_origin", v.boolean, False)
    if (origins_field is None or not origins_field.present) and not allow_missing:
        f.child(None, "allowed_origins").problem(
            "list at least one origin (or set allow_missing_origin: true)", f.line
        )
    limits = _rate_limits(fields.get("rate_limits"), kind)
    default_body = server.max_body_bytes if kind != RouteKind.CHATKIT_PROXY else 10 * 1024 * 1024
    route_body = v.get(fields, "max_body_bytes", v.integer(0, 1 << 31), default_body)
    if name is None or path is None or kind is None:
        return None, fields
    route = Route(
        name=name,
        path=path,
        kind=kind,
        allowed_origins=origins,
        allow_missing_origin=allow_missing,
        rate_limits=limits,
        max_body_bytes=route_body,
        cors_max_age_seconds=v.get(fields, "cors_max_age_seconds", v.integer(0, 86400), 600),
        user_id=_user_id(fields.get("user_id")),
    )
    if kind is RouteKind.CHATKIT_SESSION:
        return _session_route(f, fields, route), fields
    if kind is RouteKind.REALTIME_CLIENT_SECRET:
        return _realtime_route(fields, route), fields
    return _proxy_route(f, fields, route), fields


def _rate_limits(f: Field | None, kind: RouteKind | None) -> tuple[RateLimit, ...]:
    limits: list[RateLimit] = []
    for item in f.items() if f else ():
        fields = item.mapping({"key", "requests", "per", "types", "name"})
        key = v.need(item, fields, "key", v.one_of(LimitKey, list(LimitKey)))
        requests = v.need(item, fields, "requests", v.integer(1, 10**9))
        per = v.need(item, fields, "per", v.duration_seconds)
        types: frozenset[str] | None = None
        if "types" in fields:
            if kind is not RouteKind.CHATKIT_PROXY:
                fields["types"].problem("types narrows limits of chatkit_proxy routes only")
            types = frozenset(
                t for item in fields["types"].items() if (t := v.try_parse(item, _chatkit_type))
            )
        if key is None or requests is None or per is None:
            continue
        default_name = f"{key}_{requests}_per_{v.fmt_duration(per)}"
        limits.append(
            RateLimit(key, requests, per, v.get(fields, "name", v.name, default_name), types)
        )
    return tuple(limits)


def _chatkit_type(f: Field) -> str:
    raw = f.scalar().strip()
    if raw not in CHATKIT_TYPES:
        raise Invalid(f"unknown ChatKit request type {raw!r}")
    return raw


def _user_id(f: Field | None) -> UserIdConfig:
    d = UserIdConfig()
    if f is None:
        return d
    fields = f.mapping({"source", "header", "secret", "secret_file"})
    return UserIdConfig(
        source=v.get(fields, "source", v.one_of(UserIdSource, list(UserIdSource)), d.source),
        header=v.get(fields, "header", v.header_name, d.header),
        secret=v.secret(fields, "secret", f),
    )


def _session_route(parent: Field, fields: dict[str, Field], route: Route) -> Route:
    workflow = v.need(parent, fields, "workflow_id", v.nonempty)
    if workflow is not None and not workflow.startswith("wf_"):
        fields["workflow_id"].problem(f"a workflow id starts with 'wf_', got {workflow!r}")
    s = fields.get("session")
    sf = (s.mapping({
        "expires_after_seconds", "max_requests_per_1_minute", "workflow_version",
        "state_variables", "tracing_enabled", "chatkit_configuration",
    }) if s else {})  # fmt: skip
    version = v.get(sf, "workflow_version", v.nonempty, None)
    if version == "latest":
        sf["workflow_version"].problem("leave workflow_version out instead of 'latest'")
        version = None
    state = sf["state_variables"].python_value() if "state_variables" in sf else None
    config = sf["chatkit_configuration"].python_value() if "chatkit_configuration" in sf else None
    for key, value in (("state_variables", state), ("chatkit_configuration", config)):
        if value is not None and not isinstance(value, dict):
            sf[key].problem("expected a mapping")
    options = SessionOptions(
        expires_after_seconds=v.get(sf, "expires_after_seconds", v.integer(1, 600), None),
        max_requests_per_1_minute=v.get(sf, "max_requests_per_1_minute", v.integer(1, 10000), None),
        workflow_version=version,
        state_variables=state if isinstance(state, dict) else None,
        tracing_enabled=v.get(sf, "tracing_enabled", v.boolean, None),
        chatkit_configuration=config if isinstance(config, dict) else None,
    )
    return _replace(route, workflow_id=workflow, session=options)


def _realtime_route(fields: dict[str, Field], route: Route) -> Route:
    r = fields.get("realtime")
    rf = r.mapping({"expires_after_seconds", "session"}) if r else {}
    session = rf["session"].python_value() if "session" in rf else None
    if session is not None and not isinstance(session, dict):
        rf["session"].problem("expected a mapping")
    options = RealtimeOptions(
        expires_after_seconds=v.get(rf, "expires_after_seconds", v.integer(10, 7200), None),
        session=session if isinstance(session, dict) else None,
    )
    return _replace(route, realtime=options)


def _proxy_route(parent: Field, fields: dict[str, Field], route: Route) -> Route:
    target = v.need(parent, fields, "target", v.http_url)
    headers: list[tuple[str, Secret]] = []
    h = fields.get("upstream_headers")
    if h is not None and h.present:
        for key, hf in h.mapping(_AnyKey()).items():
            if not v.HEADER_NAME.fullmatch(key):
                hf.problem(f"bad header name {key!r}")
            elif key.lower() in HOP_BY_HOP or key.lower() in ("host", "content-length"):
                hf.problem(f"{key} is set by the proxy itself")
            else:
                headers.append((key, Secret(v.get({key: hf}, key, v.text, ""))))
    return _replace(
        route,
        target=target,
        stream_idle_timeout_seconds=v.get(
            fields, "stream_idle_timeout_seconds", v.number(1, 86400), 300.0
        ),
        max_streams_per_client=v.get(fields, "max_streams_per_client", v.integer(1, 10000), None),
        upstream_headers=tuple(headers),
    )


class _AnyKey(frozenset[str]):
    """Accepts every key: for mappings whose keys are the user's (header names)."""

    def __contains__(self, item: object) -> bool:
        return True


def _replace(route: Route, **changes: Any) -> Route:
    return dataclasses.replace(route, **changes)
