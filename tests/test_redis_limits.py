"""Gateways on a real redis-server: shared budgets, outages, recovery, pauses, reloads."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.limits.enforcement import LIMITER
from gateway.limits.redis import RedisStorage
from gateway.reload import apply_policy
from tests.conftest import ALLOWED, TEST_KEY, make_policy, policy_yaml, site_route
from tests.support.fake_openai import FakeOpenAI
from tests.support.redis_server import RedisServer, free_port, running_redis

Client = TestClient[web.Request, web.Application]
SESSION = "/api/chatkit/session"
ERRORS_SAMPLE = re.compile(
    r'^chatkit_gateway_limiter_backend_errors_total\{backend="redis"\} (\S+)$', re.M
)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def limited(
    redis: RedisServer, requests: int = 3, on_error: str = "allow", **limiter: Any
) -> dict[str, Any]:
    """policy_yaml kwargs: the redis backend and one route limited to `requests` per hour."""
    route = site_route(
        {"key": "client_ip", "requests": requests, "per": "1h"},
        {"key": "global", "requests": 10_000, "per": "1d"},
    )
    section = {"backend": "redis", "redis_url": redis.url, "on_backend_error": on_error}
    return {"limiter": {**section, **limiter}, "routes": [route]}


async def post(client: Client) -> tuple[int, dict[str, Any]]:
    resp = await client.post(SESSION, headers={"Origin": ALLOWED})
    return resp.status, await resp.json()


def storage_of(client: Client, cooldown: float = 0.2) -> RedisStorage:
    storage = client.app[LIMITER].storage
    assert isinstance(storage, RedisStorage)
    storage.breaker.cooldown = cooldown  # keeps recovery tests short
    return storage


async def backend_errors(client: Client) -> float:
    text = await (await client.get("/metrics")).text()
    found = ERRORS_SAMPLE.search(text)
    return float(found.group(1)) if found else 0.0


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_two_gateways_share_one_budget(gateway: Any, redis_server: RedisServer) -> None:
    a: Client = await gateway(**limited(redis_server, requests=6))
    b: Client = await gateway(**limited(redis_server, requests=6))
    statuses = [(await post(client))[0] for client in [a, b] * 5]
    assert statuses == [200] * 6 + [429] * 4
    resp = await b.post(SESSION, headers={"Origin": ALLOWED})
    assert resp.headers["RateLimit"].startswith('"') and ";r=0;" in resp.headers["RateLimit"]


async def test_one_round_trip_per_request(gateway: Any, redis_server: RedisServer) -> None:
    client: Client = await gateway(**limited(redis_server, requests=100))
    await post(client)  # connection and script already warm after this
    before = redis_server.info("commandstats")
    for _ in range(20):
        assert (await post(client))[0] == 200
    after = redis_server.info("commandstats")

    def calls(stats: dict[str, str]) -> dict[str, int]:
        return {k: int(v.split(",")[0].removeprefix("calls=")) for k, v in stats.items()}

    delta = {k: n - calls(before).get(k, 0) for k, n in calls(after).items()}
    delta = {k: n for k, n in delta.items() if n and k != "cmdstat_info"}
    # The script's own GET/SET/TIME run inside Redis; only EVALSHA crossed the network.
    assert delta.pop("cmdstat_evalsha") == 20
    assert set(delta) <= {"cmdstat_get", "cmdstat_set", "cmdstat_time"}


async def test_outage_with_allow_falls_back_to_local_limits(
    gateway: Any, redis_server: RedisServer
) -> None:
    client: Client = await gateway(**limited(redis_server, requests=3))
    storage = storage_of(client)
    assert (await post(client))[0] == 200  # spent in Redis
    redis_server.stop()
    # Local limits now: a fresh per-pod bucket of 3, then 429 — never unlimited.
    assert [(await post(client))[0] for _ in range(5)] == [200, 200, 200, 429, 429]
    assert await backend_errors(client) >= 3
    assert storage.breaker.state != "closed"
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["limiter"].startswith("degraded")

    redis_server.start()  # same port, empty data: recovers without a restart of ours

    async def shared_again() -> bool:
        resp = await client.post(SESSION, headers={"Origin": ALLOWED})
        return storage.breaker.state == "closed" and ";r=1;" in resp.headers["RateLimit"]

    await eventually(shared_again)
    assert (await post(client))[0] == 200
    assert (await post(client))[0] == 429


async def test_outage_with_deny_refuses_and_is_not_ready(
    gateway: Any, redis_server: RedisServer
) -> None:
    client: Client = await gateway(**limited(redis_server, on_error="deny"))
    storage_of(client)
    assert (await post(client))[0] == 200
    assert (await client.get("/readyz")).status == 200
    redis_server.stop()
    status, body = await post(client)
    assert status == 503 and body["error"]["code"] == "unavailable"
    assert (await client.get("/readyz")).status == 503
    assert await backend_errors(client) >= 1

    redis_server.start()

    async def recovered() -> bool:
        return (await client.get("/readyz")).status == 200 and (await post(client))[0] == 200

    await eventually(recovered)


async def test_paused_redis_never_stalls_a_request(gateway: Any, redis_server: RedisServer) -> None:
    client: Client = await gateway(**limited(redis_server, requests=50, timeout_seconds=0.05))
    storage = storage_of(client, cooldown=1.0)
    assert (await post(client))[0] == 200
    redis_server.pause()
    try:
        durations = []
        for _ in range(6):
            start = time.monotonic()
            assert (await post(client))[0] == 200  # answered from the local limiter
            durations.append(time.monotonic() - start)
        assert max(durations) < 0.5, durations
        assert storage.breaker.state == "open"
        # The open breaker answers without the network: no timeout is paid.
        assert sum(durations[3:]) < 0.15, durations
        start = time.monotonic()
        results = await asyncio.gather(*(post(client) for _ in range(20)))
        assert {s for s, _ in results} == {200} and time.monotonic() - start < 1.0
        assert await backend_errors(client) >= 3
    finally:
        redis_server.resume()

    async def closed() -> bool:
        await post(client)
        return storage.breaker.state == "closed"

    await eventually(closed)


async def test_reload_keeps_unchanged_limits_and_restarts_changed_ones(
    gateway: Any, fake_openai: FakeOpenAI, redis_server: RedisServer
) -> None:
    kw = limited(redis_server, requests=3)
    client: Client = await gateway(**kw)
    assert [(await post(client))[0] for _ in range(3)] == [200] * 3
    app, base_url = client.app, fake_openai.base_url
    apply_policy(app, make_policy(**kw, base_url=base_url))
    assert (await post(client))[0] == 429  # same limit, same budget
    apply_policy(app, make_policy(**limited(redis_server, requests=4), base_url=base_url))
    assert (await post(client))[0] == 200  # a changed limit starts afresh


# Real processes: two `chatkit-gateway serve` replicas on one Redis.


@pytest.fixture
async def two_replicas(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[list[str]]:
    procs: list[subprocess.Popen[bytes]] = []
    urls = []
    for i in range(2):
        port = free_port()
        kw = limited(redis_server, requests=10)
        text = policy_yaml(**kw, server={"host": "127.0.0.1", "port": port,
                                         "shutdown_grace_seconds": 0})  # fmt: skip
        path = tmp_path / f"gw{i}.yaml"
        path.write_text(text)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "serve",
                    "--config",
                    str(path),
                    "--stub-upstream",
                ],
                env={**os.environ, "OPENAI_API_KEY": TEST_KEY},
                stdout=subprocess.DEVNULL,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as http:
            for url in urls:
                await eventually(functools.partial(_ready, http, url), within=20)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


async def _ready(http: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with http.get(f"{url}/readyz") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def test_two_processes_share_one_budget_exactly(two_replicas: list[str]) -> None:
    async with aiohttp.ClientSession(headers={"Origin": ALLOWED}) as http:

        async def one(url: str) -> int:
            async with http.post(f"{url}{SESSION}") as resp:
                return resp.status

        statuses = await asyncio.gather(*(one(two_replicas[i % 2]) for i in range(30)))
    assert statuses.count(200) == 10 and statuses.count(429) == 20
