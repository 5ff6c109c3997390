"""Prometheus metrics on a per-app registry (never the global one), names per SPEC §5.

Label values come from the policy (route and limit-key names) or small fixed sets, never
from the request, so a flood of odd paths, origins or addresses adds no series.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import __version__
from .policy import CHATKIT_TYPES

# Upstream outcomes: the one fixed vocabulary shared by code, alerts and dashboard.
OUTCOMES = (
    "ok",
    "rate_limited",
    "auth_failed",
    "not_found",
    "client_error",
    "server_error",
    "timeout",
    "connection_error",
)
OPS_ROUTE = "ops"
UNMATCHED_ROUTE = "unmatched"
# Why the listener closed or refused a connection (gateway/server_limits.py).
CLOSE_REASONS = ("header_timeout", "body_timeout", "evicted", "refused", "malformed_request")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def chatkit_type_label(kind: str | None) -> str:
    return kind if kind in CHATKIT_TYPES else "other"


class Metrics:
    """Every metric the gateway exports, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        p = "chatkit_gateway_"
        self.requests = Counter(
            p + "requests_total", "HTTP answers by route and status.", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self.request_duration = Histogram(
            p + "request_duration_seconds", "Time to answer, by route.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_requests = Counter(
            p + "upstream_requests_total", "Upstream calls by route and outcome.",
            ["route", "outcome"], registry=r,
        )  # fmt: skip
        self.upstream_duration = Histogram(
            p + "upstream_duration_seconds", "Upstream call time (to the last byte).", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.upstream_first_byte = Histogram(
            p + "upstream_first_byte_seconds", "Time to the upstream's response headers.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            p + "rate_limited_total", "Requests refused by a limit, by route and limit key.",
            ["route", "key"], registry=r,
        )  # fmt: skip
        self.origin_rejected = Counter(
            p + "origin_rejected_total", "Requests refused for their Origin.", ["route"],
            registry=r,
        )  # fmt: skip
        self.in_flight = Gauge(p + "in_flight_requests", "Requests being answered now.", registry=r)
        self.open_streams = Gauge(
            p + "open_streams", "Proxied event streams open now.", ["route"], registry=r
        )
        self.chatkit_requests = Counter(
            p + "chatkit_requests_total", "Proxied ChatKit requests by type.", ["route", "type"],
            registry=r,
        )  # fmt: skip
        self.limiter_backend_errors = Counter(
            p + "limiter_backend_errors_total", "Limiter backend calls that failed.",
            ["backend"], registry=r,
        )  # fmt: skip
        self.config_reloads = Counter(
            p + "config_reloads_total", "Policy reloads by result.", ["result"], registry=r
        )
        self.build_info = Gauge(
            p + "build_info", "Version, and which upstream answers token routes.",
            ["version", "upstream"], registry=r,
        )  # fmt: skip
        self.open_connections = Gauge(
            p + "open_connections", "Client connections open now (serve's listener).",
            registry=r,
        )  # fmt: skip
        self.connections_closed = Counter(
            p + "connections_closed_total",
            "Client connections closed or refused by the gateway's connection limits.",
            ["reason"], registry=r,
        )  # fmt: skip
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        # Children by label values, so the per-request path skips labels()' lock and tuple
        # work. Keys come from the same bounded vocabularies as the labels themselves.
        self._answered: dict[tuple[str, int], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._upstream: dict[tuple[str, str], Counter] = {}
        self._upstream_durations: dict[str, Histogram] = {}

    def answered(self, route: str, status: int, seconds: float) -> None:
        counter = self._answered.get((route, status))
        if counter is None:
            counter = self._answered[route, status] = self.requests.labels(route, str(status))
        counter.inc()
        histogram = self._durations.get(route)
        if histogram is None:
            histogram = self._durations[route] = self.request_duration.labels(route)
        histogram.observe(seconds)

    def upstream_call(self, route: str, outcome: str, seconds: float) -> None:
        counter = self._upstream.get((route, outcome))
        if counter is None:
            counter = self._upstream[route, outcome] = self.upstream_requests.labels(route, outcome)
        counter.inc()
        histogram = self._upstream_durations.get(route)
        if histogram is None:
            histogram = self._upstream_durations[route] = self.upstream_duration.labels(route)
        histogram.observe(seconds)

    def set_upstream_mode(self, stub: bool) -> None:
        self.build_info.clear()
        self.build_info.labels(__version__, "stub" if stub else "openai").set(1)


METRICS = web.AppKey("metrics", Metrics)
