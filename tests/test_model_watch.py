"""The model watch (SPEC §10): a gateway says in its log and metrics that its model retires.

A real gateway app with a `chatkit_agent` route in front of the fake OpenAI, whose
`GET /v1/models/{id}` gives chosen models a `shutdown_date`, answers 404 `model_not_found`
for unknown ones, or fails with a 5xx. The wall clock the watch schedules by is moved
forward instead of waiting a day, and it polls every few hundredths of a second instead of
every minute. `check --online` runs as a real process against the same fake.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.agent import model_watch
from gateway.app import create_app
from gateway.metrics import Metrics
from gateway.reload import apply_policy
from tests.conftest import TEST_KEY, policy_yaml
from tests.support.agent_client import agent_policy, agent_route
from tests.support.fake_responses import FakeResponses
from tests.support.processes import base_env
from tests.test_prometheus_live import prometheus  # noqa: F401 (a fixture)

ROUTE = "assistant"
SHUTDOWN = "chatkit_gateway_model_shutdown_timestamp_seconds"
AVAILABLE = "chatkit_gateway_model_available"
Client = TestClient[web.Request, web.Application]
# 2026-12-11 00:00 UTC, as the gauge carries it
DEC_11 = datetime.datetime(2026, 12, 11, tzinfo=datetime.UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(model_watch, "_now", c)
    monkeypatch.setattr(model_watch, "POLL_SECONDS", 0.05)
    return c


def agent_block(model: str, *fallbacks: str) -> dict[str, Any]:
    return {"model": model, "fallback_models": list(fallbacks), "instructions": "Be brief."}


@pytest.fixture
async def start(
    model: FakeResponses, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    clients: list[Client] = []

    async def go(agent: dict[str, Any], *, stub: bool = False) -> Client:
        policy = agent_policy(
            f"sqlite:///{tmp_path / 'threads.db'}", base_url=model.base_url, stub=stub, agent=agent
        )
        client: Client = TestClient(TestServer(create_app(policy, metrics=Metrics())))
        await client.start_server()
        clients.append(client)
        return client

    yield go
    for client in clients:
        await client.close()


async def series(client: Client, name: str) -> dict[tuple[str, str], float]:
    """{(route, model): value} of the app's /metrics."""
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels["route"], sample.labels["model"]] = float(sample.value)
    return out


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def gauges_are(client: Client, name: str, wanted: dict[tuple[str, str], float]) -> None:
    async def check() -> bool:
        return await series(client, name) == wanted

    await until(check, f"{name} == {wanted}")


def logged(json_logs: Any, level: str) -> list[str]:
    records = [json.loads(line) for line in json_logs.lines]
    return [
        r["message"] for r in records if r["level"] == level and r["logger"].startswith("gateway")
    ]


# --------------------------------------------------------------------------- serve


async def test_a_retiring_model_is_in_the_log_and_the_metrics(
    model: FakeResponses, start: Any, clock: Clock, json_logs: Any
) -> None:
    model.models.add("gpt-4.1-sunset", shutdown_date="2026-12-11")
    client = await start(agent_block("gpt-4.1-sunset", "gpt-6.1-terra"))

    await gauges_are(client, SHUTDOWN, {(ROUTE, "gpt-4.1-sunset"): DEC_11})
    await gauges_are(client, AVAILABLE, {(ROUTE, "gpt-4.1-sunset"): 1, (ROUTE, "gpt-6.1-terra"): 1})
    (warning,) = [m for m in logged(json_logs, "warning") if "shuts down" in m]
    assert warning.startswith("model gpt-4.1-sunset of route assistant shuts down on 2026-12-11")
    assert model.models.requests == ["/v1/models/gpt-4.1-sunset", "/v1/models/gpt-6.1-terra"]
    assert model.requests == []  # no model call: only look-ups
    async with client.get("/readyz") as resp:
        assert resp.status == 200

    # Daily: asked again (and said again) a day later, not before.
    await asyncio.sleep(0.2)
    assert len(model.models.requests) == 2
    clock.shift += 86400 + 1
    await until(lambda: _true(len(model.models.requests) == 4), "asked again after a day")
    await until(
        lambda: _true(len([m for m in logged(json_logs, "warning") if "shuts down" in m]) == 2),
        "the warning repeated daily",
    )
    assert TEST_KEY not in "\n".join(json_logs.lines)


async def _true(value: bool) -> bool:
    return value


async def test_a_shutdown_date_in_unix_seconds_counts_too(
    model: FakeResponses, start: Any, clock: Clock
) -> None:
    model.models.add("gpt-old", shutdown_date=int(DEC_11) + 3600)  # an SDK-older form
    client = await start(agent_block("gpt-old"))
    await gauges_are(client, SHUTDOWN, {(ROUTE, "gpt-old"): DEC_11})


async def test_a_model_the_upstream_does_not_serve_is_an_error_and_gauge_0(
    model: FakeResponses, start: Any, clock: Clock, json_logs: Any
) -> None:
    client = await start(agent_block("gpt-nonesuch", "gpt-6.1-terra"))
    await gauges_are(client, AVAILABLE, {(ROUTE, "gpt-nonesuch"): 0, (ROUTE, "gpt-6.1-terra"): 1})
    assert await series(client, SHUTDOWN) == {}
    (error,) = [m for m in logged(json_logs, "error") if "does not serve" in m]
    assert error.startswith("the upstream does not serve model gpt-nonesuch (route assistant)")

    # Served again (say a typo fixed at OpenAI's end): a day later the gauge says so.
    model.models.add("gpt-nonesuch")
    clock.shift += 86400 + 1
    await gauges_are(client, AVAILABLE, {(ROUTE, "gpt-nonesuch"): 1, (ROUTE, "gpt-6.1-terra"): 1})


async def test_a_failing_upstream_changes_nothing_and_is_tried_again(
    model: FakeResponses, start: Any, clock: Clock, json_logs: Any
) -> None:
    model.models.fail_status = 503
    model.models.add("gpt-4.1-sunset", shutdown_date="2026-12-11")
    client = await start(agent_block("gpt-4.1-sunset"))
    await until(lambda: _true(len(model.models.requests) >= 1), "a look-up")
    await asyncio.sleep(0.3)  # several polls: not asked again before the backoff
    assert model.models.requests == ["/v1/models/gpt-4.1-sunset"]
    assert await series(client, AVAILABLE) == {} and await series(client, SHUTDOWN) == {}
    (failed,) = [m for m in logged(json_logs, "warning") if "look-up failed" in m]
    assert "HTTP 503" in failed and "gpt-4.1-sunset" in failed
    async with client.get("/readyz") as resp:
        assert resp.status == 200

    model.models.fail_status = None
    clock.shift += model_watch.RETRY_SECONDS + 1
    await gauges_are(client, SHUTDOWN, {(ROUTE, "gpt-4.1-sunset"): DEC_11})

    # Known, then the upstream fails at the next daily look-up: the gauges stay as they were.
    model.models.fail_status = 500
    clock.shift += 86400 + 1
    await until(lambda: _true(len(model.models.requests) == 3), "the daily look-up")
    await asyncio.sleep(0.2)
    assert await series(client, SHUTDOWN) == {(ROUTE, "gpt-4.1-sunset"): DEC_11}
    assert await series(client, AVAILABLE) == {(ROUTE, "gpt-4.1-sunset"): 1}


async def test_an_unreachable_upstream_changes_nothing(
    start: Any, clock: Clock, json_logs: Any, tmp_path: Path
) -> None:
    policy = agent_policy(f"sqlite:///{tmp_path / 't.db'}", base_url="http://127.0.0.1:9/v1")
    client: Client = TestClient(TestServer(create_app(policy, metrics=Metrics())))
    await client.start_server()
    try:
        await until(
            lambda: _true(any("look-up failed" in m for m in logged(json_logs, "warning"))),
            "the failure logged",
        )
        assert await series(client, AVAILABLE) == {}
        async with client.get("/readyz") as resp:
            assert resp.status == 200
    finally:
        await client.close()


async def test_a_reload_asks_about_new_models_and_drops_old_ones(
    model: FakeResponses, start: Any, clock: Clock, tmp_path: Path
) -> None:
    model.models.add("gpt-4.1-sunset", shutdown_date="2026-12-11")
    client = await start(agent_block("gpt-4.1-sunset"))
    await gauges_are(client, SHUTDOWN, {(ROUTE, "gpt-4.1-sunset"): DEC_11})

    url = f"sqlite:///{tmp_path / 'threads.db'}"
    reloaded = agent_policy(
        url, base_url=model.base_url, agent=agent_block("gpt-6.1-terra", "gpt-6.1-terra-mini")
    )
    apply_policy(client.app, reloaded)
    await gauges_are(
        client, AVAILABLE, {(ROUTE, "gpt-6.1-terra"): 1, (ROUTE, "gpt-6.1-terra-mini"): 1}
    )
    assert await series(client, SHUTDOWN) == {}  # the retiring model is no longer named
    assert "/v1/models/gpt-6.1-terra-mini" in model.models.requests


async def test_stub_mode_asks_nothing(model: FakeResponses, start: Any, clock: Clock) -> None:
    client = await start(agent_block("gpt-nonesuch"), stub=True)
    await asyncio.sleep(0.3)
    assert model.models.requests == []
    assert await series(client, AVAILABLE) == {}


# --------------------------------------------------------------------------- check --online


def policy_file(tmp_path: Path, base_url: str, *models: str) -> Path:
    route = agent_route(f"sqlite:///{tmp_path / 'threads.db'}", agent=agent_block(*models))
    path = tmp_path / "gateway.yaml"
    path.write_text(policy_yaml(base_url=base_url, routes=[route]))
    return path


async def check(path: Path, *flags: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "check", "--config", str(path), *flags,
        env=base_env(OPENAI_API_KEY=TEST_KEY),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_check_online_warns_of_a_shutdown_date_and_exits_0(
    model: FakeResponses, tmp_path: Path
) -> None:
    model.models.add("gpt-4.1-sunset", shutdown_date="2026-12-11")
    path = policy_file(tmp_path, model.base_url, "gpt-4.1-sunset", "gpt-6.1-terra")
    status, out, err = await check(path, "--online")
    assert status == 0, err
    assert yaml.safe_load(out)["routes"][0]["agent"]["fallback_models"] == ["gpt-6.1-terra"]
    assert err.splitlines()[-2:] == [
        f"{path}: warning: model gpt-4.1-sunset of route assistant shuts down on 2026-12-11: "
        "move agent.model to its successor, or name one in agent.fallback_models",
        f"{path}: ok: model gpt-6.1-terra of route assistant is served, no shutdown date",
    ]
    assert model.models.requests == ["/v1/models/gpt-4.1-sunset", "/v1/models/gpt-6.1-terra"]
    assert TEST_KEY not in out + err


async def test_check_online_exits_1_for_a_model_not_served(
    model: FakeResponses, tmp_path: Path
) -> None:
    path = policy_file(tmp_path, model.base_url, "gpt-6.1-terra", "gpt-nonesuch")
    status, out, err = await check(path, "--online")
    assert status == 1
    assert f"{path}: error: the upstream does not serve model gpt-nonesuch (route assistant)" in err
    assert TEST_KEY not in out + err


async def test_check_online_exits_1_when_the_upstream_cannot_be_asked(
    model: FakeResponses, tmp_path: Path
) -> None:
    model.models.fail_status = 503
    status, _, err = await check(policy_file(tmp_path, model.base_url, "gpt-6.1-terra"), "--online")
    assert status == 1 and "could not ask the upstream about model gpt-6.1-terra" in err
    assert "HTTP 503" in err

    fake_key = FakeResponses(api_key="sk-another-key-0000000000")  # ours is refused: 401
    async with fake_key:
        path = policy_file(tmp_path, fake_key.base_url, "gpt-6.1-terra")
        status, out, err = await check(path, "--online")
    assert status == 1 and "HTTP 401" in err
    assert TEST_KEY not in out + err and TEST_KEY[-4:] not in err  # nor the upstream's echo


async def test_plain_check_stays_offline(model: FakeResponses, tmp_path: Path) -> None:
    status, _, err = await check(policy_file(tmp_path, model.base_url, "gpt-nonesuch"))
    assert status == 0, err
    assert model.models.requests == [] and model.requests == []
    status, _, err = await check(
        policy_file(tmp_path, model.base_url, "gpt-6.1-terra"), "--online", "--stub-upstream"
    )
    assert status == 2 and "--online" in err


async def test_check_online_as_the_readme_writes_it(model: FakeResponses, tmp_path: Path) -> None:
    from tests.support.processes import ROOT
    from tests.test_readme import clean_env, readme_command

    command = readme_command(".venv/bin/chatkit-gateway check --config gateway.yaml --online")
    shipped = (ROOT / "gateway.yaml").read_text()
    assert shipped.count("base_url: https://api.openai.com/v1") == 1
    policy = tmp_path / "gateway.yaml"
    policy.write_text(shipped.replace("https://api.openai.com/v1", model.base_url))
    argv = [str(policy) if word == "gateway.yaml" else word for word in command.text.split()]
    model.models.add("gpt-6.1-terra", shutdown_date="2027-06-30")
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=clean_env(OPENAI_API_KEY=TEST_KEY),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert yaml.safe_load(out)["routes"]
    assert (
        f"{policy}: warning: model gpt-6.1-terra of route assistant shuts down on 2027-06-30"
        in (err.decode())
    )
    assert model.models.requests == ["/v1/models/gpt-6.1-terra"]
    assert TEST_KEY not in (out + err).decode()


# --------------------------------------------------------------------------- the alert, live


@pytest.mark.slow
async def test_a_served_retiring_model_reaches_a_real_prometheus_alert(
    model: FakeResponses,
    tmp_path: Path,
    gateways: list[Any],
    http: Any,
    prometheus: tuple[str, Path],  # noqa: F811
) -> None:
    """`serve` as a process, scraped by a real Prometheus loading the shipped rules: a model
    retiring in 10 days puts ChatkitGatewayModelShutdownSoon in pending (its `for` is 15m)."""
    from tests.support.processes import free_port, start_gateway, write_policy
    from tests.test_prometheus_live import query

    soon = datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=10)
    model.models.add("gpt-4.1-sunset", shutdown_date=soon.isoformat())
    prom_url, targets = prometheus
    port = free_port()
    route = agent_route(f"sqlite:///{tmp_path / 'threads.db'}", agent=agent_block("gpt-4.1-sunset"))
    config = write_policy(tmp_path / "gateway.yaml", port=port, base_url=model.base_url,
                          routes=[route])  # fmt: skip
    gw = await start_gateway(config, port, env=base_env(OPENAI_API_KEY=TEST_KEY), gateways=gateways)
    targets.write_text(yaml.safe_dump([{"targets": [f"127.0.0.1:{port}"]}]))

    async def pending() -> bool:
        body = await query(http, prom_url, 'ALERTS{alertname="ChatkitGatewayModelShutdownSoon"}')
        return [r["metric"] for r in body["data"]["result"]] == [
            {
                "__name__": "ALERTS", "alertname": "ChatkitGatewayModelShutdownSoon",
                "alertstate": "pending", "job": "chatkit-gateway", "route": ROUTE,
                "model": "gpt-4.1-sunset", "severity": "warning",
            }
        ]  # fmt: skip

    await until(pending, "the alert pending in Prometheus", seconds=60)
    line = f"model gpt-4.1-sunset of route assistant shuts down on {soon.isoformat()}"
    records = [json.loads(raw) for raw in gw.lines]
    assert [r["level"] for r in records if r["message"].startswith(line)] == ["warning"]
    assert TEST_KEY not in gw.stdout


async def test_check_online_without_an_agent_route_asks_nothing(
    model: FakeResponses, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(policy_yaml(base_url=model.base_url))  # token routes only
    status, out, err = await check(path, "--online")
    assert status == 0, err
    assert f"{path}: online: no chatkit_agent route, no model to ask about" in err
    assert model.models.requests == [] and yaml.safe_load(out)["routes"]
