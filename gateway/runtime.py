"""A policy compiled for serving: route lookup, limit scopes, trusted proxies.

`RuntimeHolder.current` is swapped whole on reload; everything in a Runtime is immutable,
so requests already running keep the snapshot they started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from .clientip import ClientIPResolver
from .identity import user_secret
from .limits import RouteLimit, route_limits
from .policy import OPS_PATHS, Policy, Route, RouteKind


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """What a chatkit_proxy route needs per request, worked out once per policy."""

    url: str  # the target, no trailing slash; a request's path below the route is appended
    timeout: aiohttp.ClientTimeout  # no total: streams may last; idle limit between chunks
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # upstream_headers, revealed


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: Route
    limits: tuple[RouteLimit, ...]  # each with its scope: the counters it spends
    preflight_headers: tuple[tuple[str, str], ...]
    methods: frozenset[str]
    allow_header: str
    user_secret: bytes
    proxy: ProxyTarget | None = None

    @property
    def name(self) -> str:
        return self.route.name


EXPOSE_HEADERS = "Retry-After, RateLimit, RateLimit-Policy, X-Request-ID"


def compile_route(policy: Policy, route: Route) -> CompiledRoute:
    methods = frozenset({"POST"})
    allow = "POST, OPTIONS"
    preflight = (
        ("Access-Control-Allow-Methods", "POST"),
        ("Access-Control-Allow-Headers", "Content-Type, X-Request-ID, Authorization"),
        ("Access-Control-Max-Age", str(route.cors_max_age_seconds)),
    )
    limits = route_limits(route)
    proxy = _proxy_target(route) if route.kind is RouteKind.CHATKIT_PROXY else None
    return CompiledRoute(
        route, limits, preflight, methods, allow, user_secret(policy, route), proxy
    )


_CONNECT_SECONDS = 10.0


def _proxy_target(route: Route) -> ProxyTarget:
    assert route.target is not None
    idle = route.stream_idle_timeout_seconds
    timeout = aiohttp.ClientTimeout(
        total=None, connect=None, sock_connect=min(_CONNECT_SECONDS, idle), sock_read=idle
    )
    headers = tuple((name, value.reveal()) for name, value in route.upstream_headers)
    return ProxyTarget(route.target.rstrip("/"), timeout, headers)


@dataclass(frozen=True, slots=True)
class Runtime:
    policy: Policy
    resolver: ClientIPResolver
    exact: dict[str, CompiledRoute]
    prefixes: tuple[tuple[str, CompiledRoute], ...]  # proxy routes, longest prefix first
    ops_paths: frozenset[str]

    @classmethod
    def build(cls, policy: Policy) -> Runtime:
        compiled = [compile_route(policy, r) for r in policy.routes]
        exact = {c.route.path: c for c in compiled}
        prefixes = tuple(
            sorted(
                ((c.route.path.rstrip("/") + "/", c) for c in compiled
                 if c.route.kind is RouteKind.CHATKIT_PROXY),
                key=lambda item: -len(item[0]),
            )
        )  # fmt: skip
        ops = OPS_PATHS | {policy.metrics.path}
        if "/" not in exact:
            ops |= {INDEX_PATH}  # the index (routes/ops.py), unless a route owns `/`
        return cls(policy, ClientIPResolver.from_config(policy.server), exact, prefixes, ops)

    def match(self, path: str) -> CompiledRoute | None:
        route = self.exact.get(path)
        if route is not None or not self.prefixes:
            return route
        if len(path) > 1 and path.endswith("/"):
            route = self.exact.get(path.rstrip("/"))
            if route is not None:
                return route
        for prefix, candidate in self.prefixes:
            if path.startswith(prefix):
                return candidate
        return None

    def scopes(self) -> set[str]:
        return {limit.scope for c in self.exact.values() for limit in c.limits}


INDEX_PATH = "/"


class RuntimeHolder:
    """The one mutable cell: the runtime every new request starts from."""

    __slots__ = ("current",)

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime


RUNTIME = web.AppKey("runtime", RuntimeHolder)
