"""Token budgets in Redis are the limits' Redis (issue 20, item 7): one client, one circuit
breaker, one failure rule (`limiter.on_backend_error`), shown with a real redis-server
killed while turns keep arriving."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.limits.enforcement import LIMITER
from gateway.limits.redis import POOL_SIZE, RedisStorage
from tests.support.agent_client import chat, create, events_of, sample
from tests.support.fake_responses import FakeResponses, Script
from tests.support.redis_server import RedisServer, running_redis

WORKERS = 4
BUDGETS = [{"key": "user", "tokens": 100_000, "per": "1d"}]  # not spent here: outages only


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def keys(redis: RedisServer) -> int:
    reply = redis.command("DBSIZE")  # ":<n>"
    assert reply is not None
    return int(reply[1:])


def outcome(events: list[dict[str, Any]]) -> str:
    """ "error" for a stream that ended in a ChatKit error, "answered" for one that carried
    a finished answer."""
    if any(e["type"] == "error" for e in events):
        return "error"
    done = [e for e in events if e["type"] == "thread.item.done"]
    return "answered" if any(e["item"]["type"] == "assistant_message" for e in done) else "?"


@dataclass
class Turn:
    status: int
    code: str  # the JSON error's code, or the stream's `outcome`
    after_kill: bool  # began after Redis was killed


@dataclass
class Load:
    """WORKERS visitors asking one question after another until stopped."""

    client: Any
    model: FakeResponses
    turns: list[Turn] = field(default_factory=list)
    running: bool = True
    killed: bool = False

    async def worker(self, n: int) -> None:
        device = f"device-{n:02d}-xxxxxxxxxxxx"
        while self.running:
            after_kill = self.killed
            resp = await chat(self.client, create(f"question from {n}"), device=device)
            if resp.status == 200:
                events = await events_of(resp)
                self.turns.append(Turn(200, outcome(events), after_kill))
            else:
                self.turns.append(
                    Turn(resp.status, (await resp.json())["error"]["code"], after_kill)
                )

    async def until(self, count: int, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while len(self.turns) < count:
            assert time.monotonic() < deadline, f"only {len(self.turns)} turns"
            await asyncio.sleep(0.02)


async def start(agent: Any, redis: RedisServer, rule: str) -> tuple[Any, Any, RedisStorage]:
    limiter = {"backend": "redis", "redis_url": redis.url, "on_backend_error": rule}
    client, metrics = await agent(sections={"limiter": limiter}, token_budgets=BUDGETS)
    storage = client.app[LIMITER].storage
    assert isinstance(storage, RedisStorage)
    storage.breaker.cooldown = 0.2  # keeps the recovery short
    return client, metrics, storage


@contextlib.asynccontextmanager
async def load(client: Any, model: FakeResponses) -> Any:
    running = Load(client, model)
    tasks = [asyncio.create_task(running.worker(n)) for n in range(WORKERS)]
    try:
        yield running
    finally:
        running.running = False
        await asyncio.gather(*tasks)


@pytest.mark.parametrize("rule", ["allow", "deny"])
async def test_redis_killed_under_load(
    agent: Any, model: FakeResponses, redis_server: RedisServer, rule: str
) -> None:
    model.default = Script(text="ok", input_tokens=5, output_tokens=5)
    client, metrics, storage = await start(agent, redis_server, rule)
    async with load(client, model) as running:
        await running.until(12)
        # One integration: the limiter's pool, and no client of the budgets' own.
        assert int(redis_server.info("clients")["connected_clients"]) <= POOL_SIZE + 1
        assert keys(redis_server) >= WORKERS  # budgets kept there
        assert {(t.status, t.code) for t in running.turns} == {(200, "answered")}
        redis_server.stop()
        running.killed = True
        killed_at = len(running.turns)
        calls_at_kill = len(model.requests)
        await running.until(killed_at + 24)
        after = [t for t in running.turns if t.after_kill]
        assert storage.breaker.state != "closed"  # the budgets' failures opened it
        errors = sample(metrics, "chatkit_gateway_limiter_backend_errors_total", backend="redis")
        assert errors >= 3
        if rule == "allow":  # counted in this replica's memory meanwhile
            assert {(t.status, t.code) for t in after} == {(200, "answered")}
        else:  # refused before the model is called, as the rate limits are
            assert {(t.status, t.code) for t in after} == {(503, "unavailable")}
            assert len(model.requests) <= calls_at_kill + WORKERS
        redis_server.start()  # same port, empty: back without a restart of ours
        recovered = len(running.turns)
        await running.until(recovered + 12)

        def shared() -> bool:
            return keys(redis_server) > 0

        deadline = time.monotonic() + 10
        while not (shared() and running.turns[-1].status == 200):
            assert time.monotonic() < deadline, "budgets did not return to Redis"
            await asyncio.sleep(0.05)
    assert storage.breaker.state == "closed"
    assert all(t.status in (200, 503) for t in running.turns)  # never a 500
