"""`chatkit_agent` across replicas: budgets through a real Redis, threads through a real
PostgreSQL (tests/support/postgres_server.py), and a store that goes down and comes back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TEST_KEY
from tests.support.agent_client import (
    DEVICE_B,
    PATH,
    add,
    agent_route,
    chat,
    create,
    events_of,
    headers,
    thread_id_of,
)
from tests.support.fake_responses import FakeResponses, Script
from tests.support.postgres_server import PostgresServer, running_postgres
from tests.support.processes import base_env, free_port, start_gateway, write_policy
from tests.support.redis_server import RedisServer, running_redis


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


async def test_replicas_share_token_budgets_through_redis(
    agent: Any, model: FakeResponses, redis_server: RedisServer
) -> None:
    model.default = Script(text="ok", input_tokens=40, output_tokens=20)
    shared = {"limiter": {"backend": "redis", "redis_url": redis_server.url}}
    budgets = [{"key": "user", "tokens": 50, "per": "1d"}]
    a, _ = await agent(sections=shared, token_budgets=budgets)
    b, _ = await agent(sections=shared, token_budgets=budgets)
    await events_of(await chat(a, create("one")))
    refused = await chat(b, create("two"))  # the other replica knows what A spent
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) > 0
    other = await chat(b, create("three"), device=DEVICE_B)
    assert other.status == 200
    await events_of(other)
    assert len(model.requests) == 2


async def test_budgets_fall_back_to_memory_when_redis_is_down(
    agent: Any, model: FakeResponses, redis_server: RedisServer
) -> None:
    model.default = Script(text="ok", input_tokens=40, output_tokens=20)
    shared = {"limiter": {"backend": "redis", "redis_url": redis_server.url}}
    client, metrics = await agent(
        sections=shared, token_budgets=[{"key": "user", "tokens": 50, "per": "1d"}]
    )
    redis_server.stop()
    first = await chat(client, create("one"))
    assert first.status == 200  # cost control, not a reason to refuse everyone
    await events_of(first)
    second = await chat(client, create("two"))
    assert second.status == 429  # counted locally meanwhile
    errors = metrics.registry.get_sample_value(
        "chatkit_gateway_limiter_backend_errors_total", {"backend": "redis"}
    )
    assert errors and errors >= 1


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    """A server of the test's own: the store-down test stops it."""
    with running_postgres() as server:
        yield server


async def test_postgresql_store_keeps_devices_apart(agent: Any, pg: PostgresServer) -> None:
    client, _ = await agent(store=pg.new_database())
    thread = thread_id_of(await events_of(await chat(client, create("on postgres"))))
    read = {"type": "threads.get_by_id", "params": {"thread_id": thread}}
    mine = await chat(client, read)
    assert mine.status == 200
    assert "on postgres" in json.dumps(await mine.json())
    assert (await chat(client, read, device=DEVICE_B)).status == 404
    assert (await chat(client, add(thread, "mine now"), device=DEVICE_B)).status == 404
    listed = await chat(client, {"type": "threads.list", "params": {}}, device=DEVICE_B)
    assert (await listed.json())["data"] == []


async def test_store_down_is_503_and_readyz_then_recovers_without_restart(
    agent: Any, model: FakeResponses, pg: PostgresServer
) -> None:
    client, metrics = await agent(store=pg.new_database())
    thread = thread_id_of(await events_of(await chat(client, create("before"))))
    asked = len(model.requests)
    pg.stop()
    listed = await chat(client, {"type": "threads.list", "params": {}})
    assert listed.status == 503
    assert await listed.json() == {
        "error": {"code": "unavailable", "message": "Thread store unavailable"}
    }
    refused = await chat(client, add(thread, "during"))
    assert refused.status == 503  # before the stream begins, and before the model is called
    assert len(model.requests) == asked
    assert (await client.get("/readyz")).status == 503
    errors = metrics.registry.get_sample_value(
        "chatkit_gateway_store_errors_total", {"route": "assistant"}
    )
    assert errors and errors >= 2
    pg.start()
    for _ in range(50):
        if (await client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.1)
    assert (await client.get("/readyz")).status == 200
    after = await chat(client, add(thread, "after"))
    assert after.status == 200
    await events_of(after)
    items = await chat(client, {"type": "items.list", "params": {"thread_id": thread}})
    texts = json.dumps(await items.json())
    assert "before" in texts and "after" in texts and "during" not in texts


@pytest.mark.slow
async def test_two_gateway_processes_share_threads_on_postgresql(
    tmp_path: Path, gateways: list[Any], pg: PostgresServer
) -> None:
    url = pg.new_database()
    started = []
    for name in ("a", "b"):
        port = free_port()
        config = write_policy(tmp_path / f"{name}.yaml", port=port, routes=[agent_route(url)])
        started.append(
            await start_gateway(
                config, port, "--stub-upstream", env=base_env(OPENAI_API_KEY=TEST_KEY),
                gateways=gateways,
            )
        )  # fmt: skip
    a, b = started
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            a.url + PATH, data=json.dumps(create("asked on a")), headers=headers()
        )
        thread = thread_id_of(await events_of(resp))
        body = json.dumps(add(thread, "continued on b"))
        resp = await http.post(b.url + PATH, data=body, headers=headers())
        assert resp.status == 200
        await events_of(resp)
        body = json.dumps({"type": "items.list", "params": {"thread_id": thread}})
        resp = await http.post(a.url + PATH, data=body, headers=headers())
        texts = json.dumps(await resp.json())
    assert "asked on a" in texts and "continued on b" in texts
    assert pg.url_for("x").split("@")[0].split(":")[-1] not in a.stdout + b.stdout  # password
