"""Prometheus metrics on a per-app registry (never the global one), names per SPEC §5.

Label values come from the policy (route and limit-key names) or small fixed sets, never
from the request, so a flood of odd paths, origins or addresses adds no series.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from . import __version__
from .chatkit_protocol import CHATKIT_TYPES
from .request_metrics import LATENCY_BUCKETS, RequestMetrics

# Upstream outcomes: the one fixed vocabulary shared by code, alerts and dashboard.
OUTCOMES = (
    "ok",
    "rate_limited",
    "auth_failed",
    "not_found",
    "model_not_found",  # chatkit_agent: the model is gone (a fallback may answer, SPEC §10)
    "client_error",
    "server_error",
    "timeout",
    "connection_error",
)
OPS_ROUTE = "ops"
UNMATCHED_ROUTE = "unmatched"
# Why the listener closed or refused a connection (listener.py, http_protocol.py).
CLOSE_REASONS = (
    "header_timeout", "body_timeout", "evicted", "refused", "refused_per_client",
    "malformed_request",
)  # fmt: skip


def chatkit_type_label(kind: str | None) -> str:
    return kind if kind in CHATKIT_TYPES else "other"


class Metrics:
    """Every metric the gateway exports, bound to one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry(auto_describe=True)
        p = "chatkit_gateway_"
        # Updated by every request: plain numbers behind one collector (request_metrics.py).
        self.per_request = RequestMetrics()
        r.register(self.per_request)
        self.answered = self.per_request.answered
        self.upstream_call = self.per_request.upstream_call
        self.upstream_first_byte = Histogram(
            p + "upstream_first_byte_seconds", "Time to the upstream's response headers.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rate_limited = Counter(
            p + "rate_limited_total", "Requests refused by a limit, by route and limit key.",
            ["route", "key"], registry=r,
        )  # fmt: skip
        self.origin_rejected = Counter(
            p + "origin_rejected_total", "Requests refused for their Origin.", ["route"],
            registry=r,
        )  # fmt: skip
        self.open_streams = Gauge(
            p + "open_streams",
            "ChatKit event streams open now (proxied or served).",
            ["route"],
            registry=r,
        )
        self.chatkit_requests = Counter(
            p + "chatkit_requests_total", "ChatKit requests by type (proxied or served).",
            ["route", "type"], registry=r,
        )  # fmt: skip
        # chatkit_agent routes (SPEC §8): the model's tokens, from each response's usage.
        self.model_tokens = Counter(
            p + "model_tokens_total", "Model tokens by route and direction (input, output).",
            ["route", "direction"], registry=r,
        )  # fmt: skip
        self.store_errors = Counter(
            p + "store_errors_total", "Thread store calls that failed, by route.", ["route"],
            registry=r,
        )  # fmt: skip
        # knowledge (SPEC §9): searches the agent made in the route's site index.
        self.knowledge_searches = Counter(
            p + "knowledge_searches_total", "Searches of the site's pages by the agent.",
            ["route"], registry=r,
        )  # fmt: skip
        # knowledge (SPEC §9): the index of each route's site, read from the store (so an
        # ingest by the CLI or another replica shows too), and serve's refreshes.
        self.knowledge_pages = Gauge(
            p + "knowledge_pages", "Pages in the route's knowledge index.", ["route"],
            registry=r,
        )  # fmt: skip
        self.knowledge_last_ingest = Gauge(
            p + "knowledge_last_ingest_timestamp_seconds",
            "Unix time of the last ingest committed to the route's knowledge index.", ["route"],
            registry=r,
        )  # fmt: skip
        self.knowledge_refresh = Gauge(
            p + "knowledge_refresh_seconds",
            "The route's knowledge.refresh period (what the staleness alert compares with).",
            ["route"], registry=r,
        )  # fmt: skip
        self.knowledge_ingest_errors = Counter(
            p + "knowledge_ingest_errors_total",
            "Pages that failed in serve's knowledge refreshes (a run that failed whole: 1).",
            ["route"], registry=r,
        )  # fmt: skip
        # The model watch (SPEC §10): what the upstream says of each model a route names.
        self.model_shutdown = Gauge(
            p + "model_shutdown_timestamp_seconds",
            "The model's announced shutdown date (00:00 UTC, unix seconds).", ["route", "model"],
            registry=r,
        )  # fmt: skip
        self.model_available = Gauge(
            p + "model_available", "1 when the upstream serves the model, 0 when it does not.",
            ["route", "model"], registry=r,
        )  # fmt: skip
        # Feedback (SPEC §10): items the widget's visitors rated, by kind (positive, negative).
        self.feedback = Counter(
            p + "feedback_total", "Items rated by visitors (the widget's thumbs), by kind.",
            ["route", "kind"], registry=r,
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
        self.slow_client_guard = Gauge(
            p + "slow_client_guard",
            "1 for the slow-client guard's state: active, or disabled (aiohttp's own limits).",
            ["state"], registry=r,
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
        # What the default registry would have shown: process_* (CPU, memory, open files),
        # python_gc_* (collections per generation, see gc_tuning.py) and python_info.
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)

    def set_upstream_mode(self, stub: bool) -> None:
        self.build_info.clear()
        self.build_info.labels(__version__, "stub" if stub else "openai").set(1)


METRICS = web.AppKey("metrics", Metrics)
