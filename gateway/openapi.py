"""The OpenAPI 3.1 document of the HTTP interface, for the policy in force: the hand-kept
`openapi.json` (package data), with the paths each route's kind says it serves
(`RouteBase.openapi`, usually `route_path_item` on its kind's template in
`components.pathItems`) and the policy's metrics path (DESIGN.md, "The OpenAPI document").
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from .policy import Policy, RouteBase

_DEFAULT_METRICS_PATH = "/metrics"


@cache
def template() -> dict[str, Any]:
    """The shipped document (parsed once; never modified: callers get copies)."""
    text = resources.files("gateway").joinpath("openapi.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


def document(policy: Policy, metrics_path: str | None = None) -> dict[str, Any]:
    """`metrics_path`: where metrics are served (fixed at start), if not the policy's."""
    doc = copy.deepcopy(template())
    paths: dict[str, Any] = doc["paths"]
    metrics = paths.pop(_DEFAULT_METRICS_PATH)
    paths[metrics_path or policy.metrics.path] = metrics
    for route in policy.routes:
        paths.update(route.openapi(doc))
    return doc


class DocumentCache:
    """The served bytes, built once per policy (a reload brings a new Policy object)."""

    __slots__ = ("_last", "metrics_path")

    def __init__(self, metrics_path: str) -> None:
        self.metrics_path = metrics_path
        self._last: tuple[Policy, bytes] | None = None

    def get(self, policy: Policy) -> bytes:
        if self._last is None or self._last[0] is not policy:
            doc = document(policy, self.metrics_path)
            self._last = (policy, json.dumps(doc, separators=(",", ":")).encode())
        return self._last[1]


def route_path_item(
    doc: dict[str, Any],
    template: str,
    route: RouteBase,
    *,
    below: bool = False,
    rate_headers: bool = False,
) -> dict[str, Any]:
    """The path item `template` of `components.pathItems`, filled in for `route`.
    `rate_headers`: every answer past the origin check reports the tightest limit."""
    item: dict[str, Any] = copy.deepcopy(doc["components"]["pathItems"][template])
    item["summary"] = f"{item['summary']} (route `{route.name}`)"
    item["x-route-name"] = route.name
    post = item["post"]
    post["operationId"] = f"{route.name}{'_upload' if below else ''}"
    item["options"]["operationId"] = f"{route.name}{'_upload' if below else ''}_preflight"
    origins = sorted(route.allowed_origins)
    for operation in (post, item["options"]):
        operation["parameters"] = [
            _origin_parameter(route, origins)
            if p.get("$ref") == "#/components/parameters/Origin"
            else p
            for p in operation["parameters"]
        ]
    limits = [
        f"{limit.name}: {limit.requests} per {limit.per_seconds:g}s"
        + (f" ({', '.join(sorted(limit.types))})" if limit.types else "")
        for limit in route.rate_limits
    ]
    post["description"] = f"Body at most {route.body_limit} bytes. " + (
        f"Limits: {'; '.join(limits)}." if limits else "No rate limits."
    )
    if rate_headers and route.rate_limits:
        headers = doc["components"]["headers"]
        ok = post["responses"]["200"]["headers"]
        for name in ("RateLimit", "RateLimit-Policy"):
            ok[name] = {**headers[name], "required": True}
    return item


def _origin_parameter(route: RouteBase, origins: list[str]) -> dict[str, Any]:
    return {
        "name": "Origin",
        "in": "header",
        "required": not route.allow_missing_origin,
        "description": "The page's origin; one of the route's `allowed_origins`"
        + (" (or none: server-to-server)" if route.allow_missing_origin else "")
        + ". Any other gets 403 `origin_not_allowed`.",
        "schema": {"type": "string", "examples": origins},
    }
