"""config/prometheus and config/grafana against the gateway itself: every metric name and
label the alert rules and the dashboard use is one the gateway exports (SPEC §5, §8-§10),
with values its labels can take; the dashboard's shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping

from tests.support.promql_exprs import all_expressions, iter_panels, load_dashboard, load_rules

# SPEC §5 and §8 metrics and the labels each carries, plus build_info.
METRICS: Mapping[str, frozenset[str]] = {
    "chatkit_gateway_requests_total": frozenset({"route", "status"}),
    "chatkit_gateway_request_duration_seconds": frozenset({"route"}),
    "chatkit_gateway_upstream_requests_total": frozenset({"route", "outcome"}),
    "chatkit_gateway_upstream_duration_seconds": frozenset({"route"}),
    "chatkit_gateway_rate_limited_total": frozenset({"route", "key"}),
    "chatkit_gateway_origin_rejected_total": frozenset({"route"}),
    "chatkit_gateway_in_flight_requests": frozenset(),
    "chatkit_gateway_open_streams": frozenset({"route"}),
    "chatkit_gateway_chatkit_requests_total": frozenset({"route", "type"}),
    "chatkit_gateway_limiter_backend_errors_total": frozenset({"backend"}),
    "chatkit_gateway_config_reloads_total": frozenset({"result"}),
    "chatkit_gateway_build_info": frozenset({"version", "upstream"}),
    "chatkit_gateway_model_tokens_total": frozenset({"route", "direction"}),
    "chatkit_gateway_store_errors_total": frozenset({"route"}),
    # SPEC §9, and the refresh period the staleness alert compares with
    "chatkit_gateway_knowledge_pages": frozenset({"route"}),
    "chatkit_gateway_knowledge_last_ingest_timestamp_seconds": frozenset({"route"}),
    "chatkit_gateway_knowledge_refresh_seconds": frozenset({"route"}),
    "chatkit_gateway_knowledge_ingest_errors_total": frozenset({"route"}),
    "chatkit_gateway_knowledge_searches_total": frozenset({"route"}),
    # SPEC §10: the model watch
    "chatkit_gateway_model_shutdown_timestamp_seconds": frozenset({"route", "model"}),
    "chatkit_gateway_model_available": frozenset({"route", "model"}),
    # aiohttp's internals as the slow-client guard found them at start
    "chatkit_gateway_slow_client_guard": frozenset({"state"}),
}
GAUGES_IN_SECONDS = frozenset(
    {
        "chatkit_gateway_knowledge_last_ingest_timestamp_seconds",
        "chatkit_gateway_knowledge_refresh_seconds",
        "chatkit_gateway_model_shutdown_timestamp_seconds",
    }
)
HISTOGRAMS = frozenset(n for n in METRICS if n.endswith("_seconds")) - GAUGES_IN_SECONDS
COUNTERS = frozenset(n for n in METRICS if n.endswith("_total"))
METRIC_TYPES: Mapping[str, str] = {
    n: "histogram" if n in HISTOGRAMS else "counter" if n in COUNTERS else "gauge" for n in METRICS
}
# Fixed label vocabularies; an equality matcher on these labels must use one of the values.
LABEL_VALUES: Mapping[str, frozenset[str]] = {
    "outcome": frozenset(
        {"ok", "rate_limited", "auth_failed", "not_found", "client_error", "server_error"}
        | {"timeout", "connection_error", "model_not_found"}
    ),
    # rate-limit keys, plus the refusals that are not a rate limit: open streams, uploads
    # and (chatkit_agent) a spent token budget
    "key": frozenset(
        {"client_ip", "origin", "global", "user", "streams", "uploads", "previews", "tokens"}
    ),
    "result": frozenset({"success", "failure"}),
    "upstream": frozenset({"openai", "stub"}),
    "backend": frozenset({"redis", "memory"}),
    "direction": frozenset({"input", "output"}),
    "state": frozenset({"active", "disabled"}),
}
# Labels that Prometheus (and the Prometheus Operator) add to every scraped series.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "endpoint"})
PROMETHEUS_METRICS: Mapping[str, frozenset[str]] = {"up": frozenset()}


# --------------------------------------------------------------------------- metrics used


_NAME = re.compile(r"(?<![A-Za-z0-9_:\"'.])([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def _recorded() -> dict[str, str]:
    return {
        rule["record"]: str(rule["expr"])
        for group in load_rules()["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def _labels_of(name: str, recorded: Mapping[str, str]) -> frozenset[str] | None:
    """Labels a series of `name` can carry (besides target labels), or None if unknown."""
    if name in METRICS:
        return METRICS[name]
    if name in PROMETHEUS_METRICS:
        return PROMETHEUS_METRICS[name]
    for suffix in _HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and METRIC_TYPES.get(base) == "histogram":
            return METRICS[base] | ({"le"} if suffix == "_bucket" else set())
    if name in recorded:
        used = [_labels_of(n, recorded) for n, _ in _metric_references(recorded[name])]
        return frozenset().union(*(u for u in used if u is not None))
    return None


def _metric_references(expr: str) -> Iterator[tuple[str, str]]:
    for name, selector in _NAME.findall(expr):
        if name.startswith("chatkit_gateway") or name in PROMETHEUS_METRICS:
            yield name, selector


def test_rules_and_dashboard_use_only_exported_metrics_and_labels() -> None:
    recorded = _recorded()
    problems: list[str] = []
    exprs = all_expressions()
    assert len(exprs) > 20
    for source, expr in exprs:
        refs = list(_metric_references(expr))
        if not refs:
            problems.append(f"{source}: uses no gateway metric")
        allowed: set[str] = set(TARGET_LABELS)
        for name, selector in refs:
            labels = _labels_of(name, recorded)
            if labels is None:
                problems.append(f"{source}: unknown metric {name}")
                continue
            allowed |= labels
            for label, op, value in _MATCHER.findall(selector):
                if label not in labels | TARGET_LABELS:
                    problems.append(f"{source}: {name} has no label {label}")
                elif (
                    op in ("=", "!=") and label in LABEL_VALUES and value not in LABEL_VALUES[label]
                ):
                    problems.append(f"{source}: {name}{{{label}{op}{value!r}}} matches nothing")
                elif label == "status" and op in ("=", "!=") and not re.fullmatch(r"\d{3}", value):
                    problems.append(f"{source}: status is a numeric code, got {value!r}")
        for group in _GROUPING.findall(expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                if label not in allowed:
                    problems.append(f"{source}: groups by {label!r}, which no series carries")
    assert not problems, "\n".join(problems)


def test_every_listed_metric_is_shown_on_the_dashboard() -> None:
    used = {
        name.removesuffix(suffix)
        for _, expr in all_expressions()
        for name, _ in _metric_references(expr)
        for suffix in ("", *_HISTOGRAM_SUFFIXES)
        if name.endswith(suffix)
    }
    missing = set(METRICS) - used
    assert not missing, f"metrics on no panel and in no rule: {sorted(missing)}"


def test_metric_list_matches_the_gateway() -> None:
    from prometheus_client.metrics import MetricWrapperBase

    from gateway.metrics import Metrics

    exported: dict[str, tuple[str | None, frozenset[str]]] = {}
    metrics = Metrics()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            exported[name] = (metric._type, frozenset(metric._labelnames))
    # The per-request series (request_metrics.py) show their labels once they have values.
    metrics.answered("r", 200, 0.1)
    metrics.upstream_call("r", "ok", 0.1)
    for family in metrics.per_request.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        seen = {label for sample in family.samples for label in sample.labels} - {"le"}
        exported[name] = (family.type, frozenset(seen))
    for name, labels in METRICS.items():
        assert exported.get(name) == (METRIC_TYPES[name], labels), name


# --------------------------------------------------------------------------- dashboard shape


def test_dashboard_uses_the_prometheus_datasource_variable() -> None:
    dashboard = load_dashboard()
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for name in ("job", "route"):
        assert variables[name]["datasource"] == ds
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    ids: list[int] = []
    for panel in iter_panels(dashboard["panels"]):
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == ds, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ds, panel["title"]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert dashboard["uid"] == "chatkit-gateway"
    assert "\n" not in json.dumps(dashboard["title"])


def test_dashboard_panels_do_not_overlap() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in iter_panels(load_dashboard()["panels"]):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        xs, ys = range(pos["x"], pos["x"] + pos["w"]), range(pos["y"], pos["y"] + pos["h"])
        cells = {(x, y) for x in xs for y in ys}
        assert not cells & taken, f"panel {panel['title']!r} overlaps another"
        taken |= cells


def test_dashboard_covers_the_brief() -> None:
    titles = " | ".join(p["title"].lower() for p in iter_panels(load_dashboard()["panels"]))
    wanted = (
        "route and status",
        "p50 / p95 / p99",
        "upstream requests by outcome",
        "upstream latency",
        "rate limited",
        "origin rejected",
        "open streams",
        "chatkit requests by type",
        "in-flight",
        "limiter backend errors",
        "reloads",
    )
    for words in wanted:
        assert words in titles, words
    exprs = " ".join(e for _, e in all_expressions())
    for q in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (route, le)" in exprs


def test_expression_helper_replaces_grafana_variables() -> None:
    for source, expr in all_expressions():
        assert "$" not in expr and "[[" not in expr, f"{source}: {expr}"
