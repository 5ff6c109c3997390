"""`chatkit_agent` across replicas: budgets through a real Redis, threads through a real
PostgreSQL (tests/postgres_server.py), and a store that goes down and comes back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_client import DEVICE_B, chat, create, events_of
from tests.fake_responses import FakeResponses, Script
from tests.redis_server import RedisServer, running_redis


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
