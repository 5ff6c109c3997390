"""Every PromQL expression shipped in config/: the Prometheus rules and the Grafana dashboard.

`all_expressions()` gives `(source, expr)` pairs ready to send to a Prometheus: Grafana's
variables are replaced (`$__rate_interval` by `5m`, a template variable such as `$route` or
`$job` by `.*`), and a `label_values(selector, label)` variable query becomes its selector.
Used by the manifest tests (metric and label names) and by the live-scrape test, which
evaluates each expression against a Prometheus scraping a running gateway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
RULES_FILE = ROOT / "config" / "prometheus" / "rules.yml"
DASHBOARD_FILE = ROOT / "config" / "grafana" / "chatkit-gateway.json"

# Grafana's built-in interval variables, as a live test would see them on a 5-minute window.
GRAFANA_BUILTINS: Mapping[str, str] = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
TEMPLATE_VALUE = ".*"  # what every template variable (All) stands for

_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$")


def load_rules() -> dict[str, Any]:
    data = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{RULES_FILE}: expected a mapping"
    return data


def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{DASHBOARD_FILE}: expected an object"
    return data


def rule_expressions() -> list[tuple[str, str]]:
    """`(source, expr)` for every recording and alerting rule in rules.yml."""
    out: list[tuple[str, str]] = []
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            what = f"record {rule['record']}" if "record" in rule else f"alert {rule['alert']}"
            out.append((f"rules.yml: {what}", str(rule["expr"]).strip()))
    return out


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def template_variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    variables = dashboard.get("templating", {}).get("list", [])
    assert isinstance(variables, list)
    return variables


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace Grafana variables (`$name`, `${name}`, `${name:format}`, `[[name]]`)."""
    values = {**GRAFANA_BUILTINS, **variables}
    names = "|".join(re.escape(n) for n in sorted(values, key=len, reverse=True))
    pattern = re.compile(
        rf"\$\{{(?P<a>{names})(?::[^}}]*)?\}}|\$(?P<b>{names})(?![A-Za-z0-9_])|\[\[(?P<c>{names})\]\]"
    )

    def repl(match: re.Match[str]) -> str:
        return values[match.group("a") or match.group("b") or match.group("c")]

    return pattern.sub(repl, expr)


def dashboard_expressions() -> list[tuple[str, str]]:
    """`(source, expr)` for every Prometheus query of the dashboard, variables replaced."""
    dashboard = load_dashboard()
    variables = {
        str(v["name"]): TEMPLATE_VALUE
        for v in template_variables(dashboard)
        if v.get("type") in ("query", "custom", "textbox", "constant", "interval")
    }
    out: list[tuple[str, str]] = []
    for var in template_variables(dashboard):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = str(query.get("query", "")) if isinstance(query, dict) else str(query or "")
        match = _LABEL_VALUES.match(text)
        expr = match.group("selector") if match else text
        out.append((f"dashboard: variable {var['name']}", substitute(expr.strip(), variables)))
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if not target.get("expr"):
                continue
            source = f"dashboard: panel {panel.get('title')!r} target {target.get('refId')}"
            out.append((source, substitute(str(target["expr"]).strip(), variables)))
    return out


def all_expressions() -> list[tuple[str, str]]:
    """Every PromQL expression of rules.yml and the dashboard, as `(source, expr)`."""
    return rule_expressions() + dashboard_expressions()


if __name__ == "__main__":
    for source, expr in all_expressions():
        print(f"# {source}\n{expr}\n")
