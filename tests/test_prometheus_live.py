"""A real Prometheus scrapes a running gateway: every shipped PromQL expression runs on it.

Proves the rules and the dashboard speak the metrics the gateway really exports, not the
ones we think it does; the main panels must also return data after some traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import ALLOWED, TEST_KEY
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import base_env, free_port, start_gateway, write_policy
from tests.support.promql_exprs import RULES_FILE, all_expressions, dashboard_expressions

pytestmark = pytest.mark.slow
# Panels that must show data once the gateway has had traffic.
MAIN_PANELS = (
    "Requests by route and status",
    "Request latency p50 / p95 / p99",
    "Upstream requests by outcome",
    "Rate limited by route and key",
    "Origin rejected by route",
)


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("prometheus is not installed (Debian package prometheus)")
    pytest.skip("prometheus is not installed")


@pytest.fixture
async def prometheus(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A private Prometheus on loopback; the caller writes its scrape target file."""
    binary = prometheus_binary()
    port = free_port()
    targets = tmp_path / "targets.yml"
    targets.write_text("[]")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES_FILE)],
                "scrape_configs": [
                    {
                        "job_name": "chatkit-gateway",
                        "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
                    }
                ],
            }
        )
    )
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url + "/-/ready") as resp:
                        if resp.status == 200:
                            break
                assert proc.returncode is None, "prometheus exited"
                assert time.monotonic() < deadline, "prometheus never became ready"
                await asyncio.sleep(0.2)
        yield url, targets
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


async def query(http: aiohttp.ClientSession, url: str, expr: str) -> dict[str, Any]:
    async with http.get(url + "/api/v1/query", params={"query": expr}) as resp:
        body: dict[str, Any] = await resp.json()
    return body


async def test_every_rule_and_panel_expression_runs_on_real_metrics(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    gateways: list[Any],
    http: aiohttp.ClientSession,
    prometheus: tuple[str, Path],
) -> None:
    prom_url, targets = prometheus
    port = free_port()
    route = {
        "name": "site",
        "path": "/api/chatkit/session",
        "kind": "chatkit_session",
        "workflow_id": "wf_test",
        "allowed_origins": [ALLOWED],
        "rate_limits": [{"key": "client_ip", "requests": 5, "per": "1h"}],
    }
    config = write_policy(
        tmp_path / "gateway.yaml", port=port, base_url=fake_openai.base_url, routes=[route]
    )
    gw = await start_gateway(config, port, env=base_env(OPENAI_API_KEY=TEST_KEY), gateways=gateways)
    targets.write_text(yaml.safe_dump([{"targets": [f"127.0.0.1:{port}"]}]))

    async def traffic() -> None:
        for origin in (ALLOWED, ALLOWED, "https://evil.example"):
            async with http.post(gw.url + "/api/chatkit/session", headers={"Origin": origin}):
                pass

    # Traffic spread over several scrapes, so rate() and histogram_quantile() have data.
    deadline = time.monotonic() + 30
    while True:
        await traffic()
        result = await query(http, prom_url, "sum(chatkit_gateway_requests_total)")
        samples = await query(http, prom_url, "count_over_time(chatkit_gateway_requests_total[1m])")
        enough = (
            samples["data"]["result"]
            and min(float(r["value"][1]) for r in samples["data"]["result"]) >= 3
        )
        if result["data"]["result"] and enough:
            break
        assert time.monotonic() < deadline, "prometheus never scraped the gateway"
        await asyncio.sleep(1)

    failures = []
    for source, expr in all_expressions():
        body = await query(http, prom_url, expr)
        if body.get("status") != "success":
            failures.append(f"{source}: {body.get('error')}\n  {expr}")
    assert not failures, "\n".join(failures)

    empty = []
    for source, expr in dashboard_expressions():
        if any(f"panel {title!r}" in source for title in MAIN_PANELS):
            body = await query(http, prom_url, expr)
            if not body["data"]["result"]:
                empty.append(f"{source}\n  {expr}")
    assert not empty, "main panels without data:\n" + "\n".join(empty)

    async with http.get(prom_url + "/api/v1/rules") as resp:
        rules = (await resp.json())["data"]["groups"]
    unhealthy = [r["name"] for g in rules for r in g["rules"] if r.get("health") == "err"]
    assert not unhealthy, unhealthy
