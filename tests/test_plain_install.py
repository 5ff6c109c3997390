"""`pip install chatkit-gateway` with no extras serves a token route (issue 20 item 8).

The rest of the suite runs with every extra installed, so it cannot see a dependency that
is imported but not declared, nor an `agent` extra module imported by a gateway that has no
`chatkit_agent` route. Two checks: a fresh interpreter reports what a token-only gateway
imports (and a reload that adds an agent route still serves it); a fresh venv gets the
project with no extras and serves a token over TCP.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ALLOWED, TEST_KEY, policy_yaml, site_route
from tests.support.agent_client import DEVICE_A, PATH, agent_route, create
from tests.support.processes import ROOT, Gateway, base_env, free_port, write_policy

# What the `agent` extra installs (pyproject.toml), and redis-py (the memory backend needs
# none of it: ~9 MiB of a token-only gateway's RSS).
AGENT_EXTRA = ["chatkit", "agents", "openai", "sqlalchemy", "aiosqlite", "asyncpg"]

_PROBE = """
import asyncio, json, sys
from aiohttp.test_utils import TestClient, TestServer
from gateway.app import create_app
from gateway.policy import parse_policy
from gateway.reload import apply_policy

watched = set(json.loads(sys.argv[3]))
env = {"OPENAI_API_KEY": sys.argv[4]}

def loaded():
    return sorted({name.split(".")[0] for name in sys.modules} & watched)

async def main():
    out = {}
    with open(sys.argv[1]) as token_only, open(sys.argv[2]) as with_agent:
        first, second = token_only.read(), with_agent.read()
    app = create_app(parse_policy(first, env=env, stub_upstream=True))
    out["after create_app"] = loaded()
    async with TestClient(TestServer(app)) as client:
        origin = {"Origin": "https://example.org"}
        token = await client.post("/api/chatkit/session", json={}, headers=origin)
        out["token"] = [token.status, (await token.json()).get("client_secret", "")[:8]]
        out["readyz"] = (await client.get("/readyz")).status
        out["token only, serving"] = loaded()
        apply_policy(app, parse_policy(second, env=env, stub_upstream=True))
        headers = {**origin, "X-Device-Id": sys.argv[6]}
        resp = await client.post(sys.argv[5], data=sys.argv[7], headers=headers)
        out["agent"] = [resp.status, await resp.text()]
        out["after reload"] = loaded()
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.slow  # a fresh interpreter
def test_a_token_only_gateway_imports_nothing_of_the_agent_extra_until_a_reload_adds_a_route(
    tmp_path: Path,
) -> None:
    token_only = tmp_path / "token.yaml"
    token_only.write_text(policy_yaml(routes=[site_route()]))
    with_agent = tmp_path / "agent.yaml"
    store = f"sqlite:///{tmp_path / 'threads.db'}"
    with_agent.write_text(policy_yaml(routes=[site_route(), agent_route(store)]))
    watched = [*AGENT_EXTRA, "redis"]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(token_only), str(with_agent), json.dumps(watched),
         TEST_KEY, PATH, DEVICE_A, json.dumps(create("after the reload"))],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=base_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["token"] == [200, "ek_stub_"]
    assert out["readyz"] == 200
    assert out["after create_app"] == []
    assert out["token only, serving"] == []  # started, served, probed: nothing of it
    status, stream = out["agent"]
    assert status == 200
    assert "after the reload" in stream and '"type":"error"' not in stream.replace(" ", "")
    assert {"chatkit", "agents", "sqlalchemy", "aiosqlite"} <= set(out["after reload"])


# --- a fresh venv, no extras ------------------------------------------------------------


def _copy_project(dest: Path) -> Path:
    """What a wheel is built from (pyproject.toml, README.md, gateway/), as the tree has it
    now: the build writes its files there, not in the shared working tree."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "gateway", dest / "gateway", ignore=ignore)
    return dest


def _run(*cmd: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=base_env()
    )
    assert done.returncode == 0, f"{cmd}:\n{done.stdout}\n{done.stderr}"
    return done


async def _serve(venv: Path, config: Path, port: int, cwd: Path) -> Gateway:
    proc = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "chatkit-gateway"), "serve", "--config", str(config),
        "--stub-upstream", env=base_env(OPENAI_API_KEY=TEST_KEY), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    return Gateway(proc, port)


async def _healthy(gw: Gateway, http: aiohttp.ClientSession) -> None:
    for _ in range(600):  # a fresh venv compiles its bytecode on this first start
        assert gw.proc.returncode is None, f"gateway exited:\n{gw.stdout}"
        try:
            async with http.get(f"{gw.url}/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"gateway never became healthy:\n{gw.stdout}")


@pytest.mark.slow
async def test_pip_install_with_no_extras_serves_a_token_route(
    tmp_path: Path, gateways: list[Any]
) -> None:
    uv = Path(sys.executable).parent / "uv"  # the dev extra's; pip's cache is uv's here
    venv = tmp_path / "venv"
    _run(uv, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    _run(uv, "pip", "install", "--quiet", "--python", python, _copy_project(tmp_path / "src"))
    installed = _run(uv, "pip", "freeze", "--python", python).stdout.lower()
    names = {line.split("==")[0].replace("_", "-") for line in installed.splitlines()}
    assert "pydantic" in names  # declared, so installed
    assert names.isdisjoint({"openai-chatkit", "openai-agents", "openai", "sqlalchemy"})

    helped = _run(venv / "bin" / "chatkit-gateway", "--help", timeout=60)
    assert "serve" in helped.stdout

    port = free_port()
    config = write_policy(tmp_path / "gateway.yaml", port=port, routes=[site_route()])
    gw = await _serve(venv, config, port, tmp_path)
    gateways.append(gw)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        await _healthy(gw, http)
        url = f"{gw.url}/api/chatkit/session"
        async with http.post(url, json={}, headers={"Origin": ALLOWED}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["client_secret"].startswith("ek_stub_")
        async with http.get(f"{gw.url}/readyz") as resp:
            assert resp.status == 200
    assert "Traceback" not in gw.stdout
