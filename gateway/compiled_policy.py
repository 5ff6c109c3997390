"""A policy compiled for serving: route lookup, limit scopes, trusted proxies.

`ActivePolicy.current` is swapped whole on reload; everything in a CompiledPolicy is immutable,
so requests already running keep the snapshot they started with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from .clientip import ClientIPResolver, ClientKey
from .limits import RouteLimit, route_limits
from .policy import OPS_PATHS, Policy, RouteBase, RouteHandler


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: RouteBase
    limits: tuple[RouteLimit, ...]  # each with its scope: the counters it spends
    preflight_headers: tuple[tuple[str, str], ...]
    methods: frozenset[str]
    allow_header: str
    handler: RouteHandler = field(repr=False)  # what the kind's compile() made of it
    # The kind overrides origin_exempt (an agent's previews): only then is it asked.
    may_skip_origin: bool = False

    @property
    def name(self) -> str:
        return self.route.name


# What every route's preflight admits: X-Device-Id is what a page's ChatKit `api.fetch` adds.
ALLOW_HEADERS = ("Content-Type", "X-Request-ID", "Authorization", "X-Device-Id")
EXPOSE_HEADERS = "Retry-After, RateLimit, RateLimit-Policy, X-Request-ID"


def compile_route(policy: Policy, route: RouteBase) -> CompiledRoute:
    methods = route.methods
    allow = ", ".join([*sorted(methods), "OPTIONS"])
    known = {h.lower() for h in ALLOW_HEADERS}
    extra = [h for h in dict.fromkeys(route.cors_allow_headers) if h.lower() not in known]
    preflight = (
        ("Access-Control-Allow-Methods", ", ".join(sorted(methods))),
        ("Access-Control-Allow-Headers", ", ".join([*ALLOW_HEADERS, *extra])),
        ("Access-Control-Max-Age", str(route.cors_max_age_seconds)),
    )
    handler = route.compile(policy.upstream)
    may_skip = type(route).origin_exempt is not RouteBase.origin_exempt
    return CompiledRoute(route, route_limits(route), preflight, methods, allow, handler, may_skip)


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy: Policy
    resolver: ClientIPResolver
    exact: dict[str, CompiledRoute]
    prefixes: tuple[tuple[str, CompiledRoute], ...]  # serves_below routes, longest first
    ops_paths: frozenset[str]
    client_key: ClientKey  # what `client_ip` limits count: the client's network

    @classmethod
    def build(cls, policy: Policy) -> CompiledPolicy:
        compiled = [compile_route(policy, r) for r in policy.routes]
        exact = {c.route.path: c for c in compiled}
        below = [(c.route.path.rstrip("/") + "/", c) for c in compiled if c.route.serves_below]
        prefixes = tuple(sorted(below, key=lambda item: -len(item[0])))
        ops = OPS_PATHS | {policy.metrics.path}
        if "/" not in exact:
            ops |= {INDEX_PATH}  # the index (routes/ops.py), unless a route owns `/`
        resolver = ClientIPResolver.from_config(policy.server)
        key = ClientKey(policy.limiter.ipv4_prefix, policy.limiter.ipv6_prefix)
        return cls(policy, resolver, exact, prefixes, ops, key)

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


class ActivePolicy:
    """The one mutable cell: the compiled policy every new request starts from."""

    __slots__ = ("current",)

    def __init__(self, compiled: CompiledPolicy) -> None:
        self.current = compiled


ACTIVE_POLICY = web.AppKey("active_policy", ActivePolicy)
