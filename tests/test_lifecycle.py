"""Drain on SIGTERM, against a real process: not ready at once, in-flight work finished."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import ALLOWED, TEST_KEY
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import base_env, free_port, json_lines, start_gateway, write_policy

TOKEN = "/api/chatkit/session"


async def test_sigterm_during_a_slow_upstream_call_still_answers_it(
    tmp_path: Path, fake_openai: FakeOpenAI, gateways: list[Any], http: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = write_policy(
        tmp_path / "gateway.yaml",
        port=port,
        base_url=fake_openai.base_url,
        server={"shutdown_grace_seconds": 0.5, "drain_timeout_seconds": 10},
        upstream={"timeout_seconds": 10},
    )
    gw = await start_gateway(config, port, env=base_env(OPENAI_API_KEY=TEST_KEY), gateways=gateways)
    fake_openai.delay_next(2.0)
    slow = asyncio.create_task(http.post(gw.url + TOKEN, headers={"Origin": ALLOWED}))
    while not fake_openai.received:  # the call has reached OpenAI and is waiting there
        await asyncio.sleep(0.02)

    gw.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.1)
    async with http.get(gw.url + "/readyz") as ready:
        assert ready.status == 503
    async with http.get(gw.url + "/healthz") as alive:
        assert alive.status == 200  # still serving during the grace

    resp = await slow
    assert resp.status == 200
    assert (await resp.json())["client_secret"].startswith("ek_")
    assert await gw.wait_exit(15) == 0
    messages = [r["message"] for r in json_lines(gw.stdout)]
    assert messages.index("draining") < messages.index("stopped")


async def test_listener_closes_after_the_grace(
    tmp_path: Path, gateways: list[Any], http: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = write_policy(
        tmp_path / "gateway.yaml", port=port, server={"shutdown_grace_seconds": 0.3}
    )
    env = base_env(OPENAI_API_KEY=TEST_KEY)
    gw = await start_gateway(config, port, "--stub-upstream", env=env, gateways=gateways)
    gw.proc.send_signal(signal.SIGTERM)
    assert await gw.wait_exit(10) == 0
    try:
        async with http.get(gw.url + "/healthz") as resp:
            raise AssertionError(f"still answering after exit: {resp.status}")
    except aiohttp.ClientConnectionError:
        pass
