"""The command line as users run it: real processes, real TCP, real signals."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import TEST_KEY, policy_yaml, site_route
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import (
    ROOT,
    SCRIPT,
    Gateway,
    base_env,
    free_port,
    json_lines,
    poll,
    start_gateway,
    write_policy,
)

pytestmark = pytest.mark.slow


ORIGIN = "https://example.org"
TOKEN_PATH = "/api/chatkit/session"
PROBLEM_LINE = re.compile(r"^[^:]+:\d+: \S+: .+$")
REDIS_PASSWORD = "redis-hunter2-pass"


def run_cli(
    *args: str, env: Mapping[str, str], script: bool = False
) -> subprocess.CompletedProcess[str]:
    cmd = [str(SCRIPT)] if script else [sys.executable, "-m", "gateway"]
    return subprocess.run(
        [*cmd, *args], env=dict(env), capture_output=True, text=True, timeout=30, cwd=ROOT
    )


def replace_file(path: Path, text: str) -> None:
    """Swap the file in one step, the way a ConfigMap update or an editor's save does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# --- check ----------------------------------------------------------------------------------


@pytest.mark.parametrize("script", [False, True], ids=["python -m gateway", "chatkit-gateway"])
def test_check_prints_the_effective_policy_with_secrets_masked(
    tmp_path: Path, script: bool
) -> None:
    policy = write_policy(
        tmp_path / "gateway.yaml",
        port=8080,
        limiter={
            "backend": "redis",
            "redis_url": f"redis://gw:{REDIS_PASSWORD}@redis.internal:6379/0",
        },
    )
    done = run_cli(
        "check", "--config", str(policy), env=base_env(OPENAI_API_KEY=TEST_KEY), script=script
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert TEST_KEY not in out + done.stderr
    assert REDIS_PASSWORD not in out + done.stderr
    effective = yaml.safe_load(out)
    assert effective["upstream"]["api_key"] == "***"
    assert effective["limiter"]["redis_url"] == "redis://gw:***@redis.internal:6379/0"
    assert effective["server"]["port"] == 8080
    assert [r["name"] for r in effective["routes"]] == ["site", "voice"]
    assert effective["routes"][0]["rate_limits"][0]["per"] == "1h"
    # Agent Builder's workflows are gone: a session route is valid, but said to need one
    # that OpenAI still serves.
    assert done.stderr.splitlines() == [
        f"{policy}: warning: route 'site': chatkit_session mints hosted ChatKit sessions for a "
        "workflow; Agent Builder shut down on 2026-11-30, so this works only for a workflow "
        "OpenAI still serves (an Agent Builder workflow's agent becomes a chatkit_agent route: "
        "README, Migrating from Agent Builder)"
    ]


@pytest.mark.parametrize("script", [False, True], ids=["python -m gateway", "chatkit-gateway"])
def test_check_reports_every_problem_with_its_line(tmp_path: Path, script: bool) -> None:
    text = policy_yaml().replace("workflow_id: wf_test", "workflow_id: wf_test\n  bogus: 1")
    text = text.replace("per: 1h", "per: 1y", 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    lines = text.splitlines()
    bogus_line = next(i for i, line in enumerate(lines, 1) if "bogus" in line)
    per_line = next(i for i, line in enumerate(lines, 1) if "1y" in line)

    done = run_cli("check", "--config", str(bad), env=base_env(), script=script)
    assert done.returncode != 0
    output = (done.stdout + done.stderr).strip().splitlines()
    assert "Traceback" not in done.stdout + done.stderr
    assert all(PROBLEM_LINE.match(line) for line in output), output
    assert any(
        line.startswith(f"{bad}:{bogus_line}: routes[0].bogus: unknown key") for line in output
    )
    assert any(
        line.startswith(f"{bad}:{per_line}: routes[0].rate_limits[0].per: ") for line in output
    )
    # No OPENAI_API_KEY in the environment: that is reported too, not crashed on.
    assert any(
        ": upstream.api_key: environment variable OPENAI_API_KEY is not set" in line
        for line in output
    )


def test_check_on_a_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    done = run_cli("check", "--config", str(tmp_path / "nope.yaml"), env=base_env())
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert PROBLEM_LINE.match(done.stderr.strip())


def test_serve_with_a_broken_policy_exits_with_json_logs_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(policy_yaml().replace("timeout_seconds: 2", "timeout_seconds: soon"))
    done = run_cli(
        "serve", "--config", str(bad), env=base_env(OPENAI_API_KEY=TEST_KEY), script=True
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    records = json_lines(done.stdout)
    details = [r.get("detail", "") for r in records if r["level"] == "error"]
    assert any(
        re.match(rf"^{re.escape(str(bad))}:\d+: upstream\.timeout_seconds: expected a number", d)
        for d in details
    ), records


def test_serve_on_a_taken_port_exits_with_a_json_log_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        policy = write_policy(tmp_path / "gateway.yaml", port=port)
        done = run_cli("serve", "--config", str(policy), env=base_env(OPENAI_API_KEY=TEST_KEY))
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert any(r["message"] == "cannot listen" for r in json_lines(done.stdout))


# --- serve: real processes ------------------------------------------------------------------


async def token(http: aiohttp.ClientSession, gw: Gateway, origin: str) -> tuple[int, Any]:
    async with http.post(f"{gw.url}{TOKEN_PATH}", json={}, headers={"Origin": origin}) as resp:
        return resp.status, await resp.json()


async def metric(http: aiohttp.ClientSession, gw: Gateway, pattern: str) -> float | None:
    async with http.get(f"{gw.url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{pattern} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


async def test_end_to_end_over_tcp_in_front_of_the_fake_openai(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    gateways: list[Gateway],
    http: aiohttp.ClientSession,
) -> None:
    port = free_port()
    config = write_policy(tmp_path / "gateway.yaml", port=port, base_url=fake_openai.base_url)
    gw = await start_gateway(config, port, env=base_env(OPENAI_API_KEY=TEST_KEY), gateways=gateways)

    async with http.post(
        f"{gw.url}{TOKEN_PATH}", json={}, headers={"Origin": ORIGIN, "X-Request-ID": "e2e-1"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Request-ID"] == "e2e-1"
        body = await resp.json()
    assert set(body) == {"client_secret", "expires_at"}
    (session,) = fake_openai.sessions.values()
    assert body == {"client_secret": session["client_secret"], "expires_at": session["expires_at"]}
    assert body["client_secret"].startswith("ek_")

    (sent,) = fake_openai.requests_to("/chatkit/sessions")
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert "chatkit_beta=v1" in sent.headers["openai-beta"]
    assert sent.body["workflow"]["id"] == "wf_test"
    user = sent.body["user"]
    assert user.startswith("u_") and "127.0.0.1" not in user

    # A foreign origin is refused before OpenAI is called.
    status, error = await token(http, gw, "https://evil.example")
    assert (status, error["error"]["code"]) == (403, "origin_not_allowed")
    assert len(fake_openai.requests_to("/chatkit/sessions")) == 1

    async with http.get(f"{gw.url}/readyz") as resp:
        assert resp.status == 200

    gw.proc.send_signal(signal.SIGTERM)
    readyz: list[int] = []

    async def draining() -> bool:
        async with http.get(f"{gw.url}/readyz") as resp:
            readyz.append(resp.status)
            return resp.status == 503

    await poll(draining, 0.9, "/readyz 503 while draining")
    # Still answering during the grace: in-flight and late requests are served.
    async with http.get(f"{gw.url}/healthz") as resp:
        assert resp.status == 200
    assert await gw.wait_exit(10) == 0

    records = json_lines(gw.stdout)
    assert TEST_KEY not in gw.stdout
    assert body["client_secret"] not in gw.stdout
    assert any(r.get("request_id") == "e2e-1" and r.get("status") == 200 for r in records)
    assert [r["message"] for r in records][-1] == "stopped"


async def test_a_burst_of_requests_does_not_wake_the_garbage_collector(
    tmp_path: Path, gateways: list[Gateway], http: aiohttp.ClientSession
) -> None:
    """gc_tuning.py: CPython's default threshold (700) collects every few dozen requests
    under concurrency; raised, a burst of 400 answers leaves it asleep."""
    port = free_port()
    routes = [site_route({"key": "client_ip", "requests": 10_000, "per": "1h"})]
    config = write_policy(tmp_path / "gateway.yaml", port=port, routes=routes)
    gw = await start_gateway(
        config, port, "--stub-upstream", env=base_env(OPENAI_API_KEY=TEST_KEY), gateways=gateways
    )
    gen0 = 'python_gc_collections_total{generation="0"}'
    before = await metric(http, gw, re.escape(gen0))
    assert before is not None, "python_gc_* metrics are exported"

    async def burst(n: int) -> None:
        for _ in range(n):
            status, _ = await token(http, gw, ORIGIN)
            assert status == 200

    await asyncio.gather(*(burst(8) for _ in range(50)))
    after = await metric(http, gw, re.escape(gen0))
    assert after is not None
    # At most one: the count carried over from start-up may cross the threshold once.
    assert after - before <= 1


async def test_stub_mode_reload_on_edit_and_a_refused_sighup(
    tmp_path: Path, gateways: list[Gateway], http: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = write_policy(tmp_path / "gateway.yaml", port=port)
    config.write_text(config.read_text().replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-}"))
    gw = await start_gateway(config, port, "--stub-upstream", env=base_env(), gateways=gateways)

    first = json.loads(gw.lines[0])
    assert "stub" in first["message"]
    build_info = r'chatkit_gateway_build_info\{[^}]*upstream="stub"[^}]*\}'
    assert await metric(http, gw, build_info) == 1
    status, body = await token(http, gw, ORIGIN)
    assert status == 200 and body["client_secret"].startswith("ek_stub_")

    # Edit the file: the watcher (polling every 2 s) swaps the route's origins.
    other = "https://other.example"
    replace_file(config, config.read_text().replace(ORIGIN, other))

    async def reloaded() -> bool:
        return (await token(http, gw, other))[0] == 200

    await poll(reloaded, 6.5, "the edited policy to take effect")
    assert (await token(http, gw, ORIGIN))[0] == 403
    success = r'chatkit_gateway_config_reloads_total\{result="success"\}'
    failure = r'chatkit_gateway_config_reloads_total\{result="failure"\}'
    assert await metric(http, gw, success) == 1
    assert await metric(http, gw, failure) == 0

    # A broken file and SIGHUP: refused, counted once, the old policy keeps serving.
    replace_file(config, config.read_text().replace("per: 1h", "per: 1y"))
    gw.proc.send_signal(signal.SIGHUP)

    async def refused() -> bool:
        return await metric(http, gw, failure) == 1

    await poll(refused, 3, "the reload failure to be counted")
    assert (await token(http, gw, other))[0] == 200
    await asyncio.sleep(2.5)  # a watcher tick: the same broken content is not tried twice
    assert await metric(http, gw, failure) == 1
    assert await metric(http, gw, success) == 1
    assert (await token(http, gw, other))[0] == 200

    records = json_lines(gw.stdout)
    refusals = [r for r in records if r["message"] == "reload refused, old policy stays"]
    assert {r["detail"].split(": ")[1] for r in refusals} == {
        "routes[0].rate_limits[0].per",
        "routes[1].rate_limits[0].per",
    }
    assert body["client_secret"] not in gw.stdout
