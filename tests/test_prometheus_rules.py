"""config/prometheus: `promtool check rules` and `promtool test rules`, every alert's metadata,
and the dashboard's queries parsed by promtool too; the README's sed that sets the runbook URLs.

promtool comes with Debian's `prometheus` package. Without it these tests skip locally and fail
in CI (CI=true), so a CI machine that lost the package cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.promql_exprs import RULES_FILE, dashboard_expressions, load_rules
from tests.test_readme import all_commands

PROMETHEUS_DIR = RULES_FILE.parent
RULES_TEST_FILE = PROMETHEUS_DIR / "rules.test.yml"
ROOT = PROMETHEUS_DIR.parent.parent
DEPLOY_DOC = ROOT / "README.md"
PROMETHEUS_RULE_FILE = ROOT / "config" / "kubernetes" / "prometheusrule.yaml"
SEVERITIES = {"critical", "warning", "info"}
# A placeholder (the repository has no public address): one value, documented in rules.yml's
# header, that the README's sed replaces everywhere at once.
RUNBOOK_PREFIX = "https://github.com/example/chatkit-gateway/blob/main/README.md#"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if os.access("/usr/bin/promtool", os.X_OK) else None
    )
    if found is None:
        message = "promtool not found: apt-get install -y prometheus"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def alerts() -> list[dict[str, Any]]:
    return [r for g in load_rules()["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_check_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", RULES_FILE.name], PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests(promtool: str) -> None:
    result = run([promtool, "test", "rules", RULES_TEST_FILE.name], PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse(promtool: str, tmp_path: Path) -> None:
    """Every dashboard query (variables replaced) as a recording rule: promtool parses it."""
    exprs = dashboard_expressions()
    rules = [{"record": f"dashboard:query{n}", "expr": expr} for n, (_, expr) in enumerate(exprs)]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", path.name], tmp_path)
    sources = "\n".join(f"dashboard:query{n} = {source}" for n, (source, _) in enumerate(exprs))
    assert result.returncode == 0, result.stdout + result.stderr + "\n" + sources


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    spec = yaml.safe_load(RULES_TEST_FILE.read_text(encoding="utf-8"))
    assert spec["rule_files"] == [RULES_FILE.name]
    fired: set[str] = set()
    quiet: set[str] = set()
    for test in spec["tests"]:
        for case in test.get("alert_rule_test", []):
            (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in alerts()}
    assert names - fired == set(), "alerts never seen firing"
    assert names - quiet == set(), "alerts never seen quiet"
    assert (fired | quiet) <= names, "tests for alerts that do not exist"


def test_alerts_cover_the_brief() -> None:
    exprs = {a["alert"]: str(a["expr"]) for a in alerts()}
    everything = " ".join(str(r["expr"]) for g in load_rules()["groups"] for r in g["rules"])
    for needle in (
        'status=~"5.."',
        'outcome="auth_failed"',
        "chatkit_gateway:upstream_duration_seconds:p95_5m",
        "chatkit_gateway_limiter_backend_errors_total",
        'chatkit_gateway_config_reloads_total{result="failure"}',
        "chatkit_gateway_rate_limited_total",
        "chatkit_gateway_store_errors_total",
    ):
        assert needle in everything, needle
    assert any(re.search(r'up\{job=~"\.\*chatkit-gateway\.\*"\} == 0', e) for e in exprs.values())


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors, plus explicit <a id|name="…"> anchors."""
    anchors = set(re.findall(r'<a\s+(?:id|name)="([^"]+)"', markdown))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_has_metadata_and_a_runbook_section() -> None:
    anchors = _anchors(DEPLOY_DOC.read_text(encoding="utf-8"))
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for alert in alerts():
        name = alert["alert"]
        assert re.fullmatch(r"\d+[smh]", str(alert.get("for", ""))), f"{name}: for"
        assert alert["labels"]["severity"] in SEVERITIES, name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        runbook = annotations["runbook_url"]
        assert runbook.startswith(RUNBOOK_PREFIX), name
        anchor = runbook.removeprefix(RUNBOOK_PREFIX)
        assert anchor == name.lower(), f"{name}: runbook anchor {anchor}"
        assert anchor in anchors, f"{name}: README.md has no section #{anchor}"
    header = RULES_FILE.read_text(encoding="utf-8").split("groups:")[0]
    assert RUNBOOK_PREFIX.removesuffix("#") in header, "the placeholder is documented"


def _runbook_urls(text: str) -> list[str]:
    return re.findall(r"runbook_url:\s*(\S+)", text)


def test_readme_sed_sets_every_runbook_url(tmp_path: Path) -> None:
    """The README's one sed points every runbook_url, in the rules, their unit tests and the
    PrometheusRule, at another copy of the README, and the unit tests still pass."""
    seds = [c for c in all_commands() if c.key.startswith("sed -i 's|" + RUNBOOK_PREFIX[:-1])]
    assert len(seds) == 1, "README: the one sed that sets the runbook URLs"
    command = seds[0]
    words = shlex.split(command.text)
    files = words[3:]
    assert {ROOT / f for f in files} == {RULES_FILE, RULES_TEST_FILE, PROMETHEUS_RULE_FILE}
    old, new = words[2].split("|")[1:3]
    assert old + "#" == RUNBOOK_PREFIX
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    done = run(["bash", "-c", command.text], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in files:
        text = (tmp_path / name).read_text(encoding="utf-8")
        urls = _runbook_urls(text)
        assert urls, name
        assert all(u.startswith(new + "#") for u in urls), (name, urls)
        assert old not in text, name
        assert len(urls) == len(_runbook_urls((ROOT / name).read_text(encoding="utf-8")))
    promtool_path = shutil.which("promtool")
    if promtool_path:
        result = run(
            [promtool_path, "test", "rules", RULES_TEST_FILE.name], tmp_path / "config/prometheus"
        )
        assert result.returncode == 0, result.stdout + result.stderr
