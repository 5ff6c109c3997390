"""One behaviour suite for limit storages, run on the memory backend and on a real Redis.

Memory runs on a fake clock. Redis runs on its own clock, so its cases use long windows
(milliseconds of drift change nothing but `reset`/`retry_after` by that much) or tiny
windows with polling — never an exact timing assertion.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from gateway.limits import (
    Bucket,
    Limiter,
    LimitStorage,
    MemoryStorage,
    Verdict,
    route_limits,
)
from gateway.limits.redis import RedisStorage
from gateway.policy import Backend, LimiterConfig, LimitKey, RateLimit, Secret
from gateway.routes.chatkit_proxy import ChatKitProxyRoute
from tests.support.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

HOUR = 3600.0


def limit(requests: int, per: float, key: LimitKey = LimitKey.CLIENT_IP) -> RateLimit:
    return RateLimit(key, requests, per, f"limit-{requests}-per-{per * 1000:.0f}ms")


def bucket(rl: RateLimit, key: str = "192.0.2.1", scope: str | None = None) -> Bucket:
    return Bucket(scope or f"r:{rl.name}", rl, key)


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    name: str
    storage: LimitStorage
    clock: FakeClock | None = None
    tol: float = 0.0  # how far reset/retry may drift on a real clock
    redis: RedisServer | None = field(default=None, repr=False)

    async def take(self, *buckets: Bucket) -> list[Verdict]:
        return await self.storage.acquire(buckets)

    async def take_when_allowed(self, *buckets: Bucket, after: float) -> list[Verdict]:
        """Wait `after` seconds, then (on a real clock) retry briefly until admitted."""
        if self.clock is not None:
            self.clock.now += after
            return await self.take(*buckets)
        await asyncio.sleep(after)
        deadline = time.monotonic() + 2
        while True:
            verdicts = await self.take(*buckets)
            if all(v.allowed for v in verdicts) or time.monotonic() > deadline:
                return verdicts
            await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()
        yield Harness("memory", MemoryStorage(max_keys=1000, clock=clock), clock)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    config = LimiterConfig(
        backend=Backend.REDIS,
        redis_url=Secret(server.url),
        key_prefix=f"t{random.getrandbits(48):x}:",  # a fresh namespace per test
        timeout_seconds=2.0,  # generous: behaviour here, not outages
    )
    storage = RedisStorage(config)
    try:
        yield Harness("redis", storage, tol=0.5, redis=server)
    finally:
        await storage.close()


def allowed(verdicts: Sequence[Verdict]) -> bool:
    return all(v.allowed for v in verdicts)


async def test_quota_is_exact(backend: Harness) -> None:
    b = bucket(limit(5, HOUR))
    remaining = [(await backend.take(b))[0] for _ in range(5)]
    assert [v.allowed for v in remaining] == [True] * 5
    assert [v.remaining for v in remaining] == [4, 3, 2, 1, 0]
    for _ in range(3):
        (refused,) = await backend.take(b)
        assert not refused.allowed and refused.remaining == 0


async def test_values_of_remaining_reset_and_retry_after(backend: Harness) -> None:
    b = bucket(limit(4, 40.0))  # one unit every 10 s, bursts of 4
    expected_reset = [10.0, 20.0, 30.0, 40.0]
    for want in expected_reset:
        (v,) = await backend.take(b)
        assert v.allowed and v.retry_after == 0.0
        assert v.reset_seconds == pytest.approx(want, abs=backend.tol)
    (refused,) = await backend.take(b)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(10.0, abs=backend.tol)
    assert refused.reset_seconds == pytest.approx(40.0, abs=backend.tol)


async def test_refill_after_retry_after(backend: Harness) -> None:
    b = bucket(limit(2, 0.2))  # tiny window so a real clock gets there quickly
    assert allowed(await backend.take(b)) and allowed(await backend.take(b))
    (refused,) = await backend.take(b)
    assert not refused.allowed and 0 < refused.retry_after <= 0.1 + 1e-9
    (again,) = await backend.take_when_allowed(b, after=refused.retry_after)
    assert again.allowed


async def test_all_or_nothing_across_limits(backend: Harness) -> None:
    tight, loose = bucket(limit(2, HOUR)), bucket(limit(5, HOUR))
    assert allowed(await backend.take(tight, loose))
    assert allowed(await backend.take(tight, loose))
    for _ in range(3):
        verdicts = await backend.take(tight, loose)
        assert [v.allowed for v in verdicts] == [False, True]
        assert verdicts[1].remaining == 3  # reported as not spent: 5 - 2
    # The refusals spent nothing of the loose limit: 2 used, 3 left.
    assert [(await backend.take(loose))[0].remaining for _ in range(3)] == [2, 1, 0]
    assert not (await backend.take(loose))[0].allowed


async def test_keys_are_independent(backend: Harness) -> None:
    rl = limit(2, HOUR)
    a, b = bucket(rl, "192.0.2.1"), bucket(rl, "192.0.2.2")
    other_scope = bucket(rl, "192.0.2.1", scope="other-route")
    assert allowed(await backend.take(a)) and allowed(await backend.take(a))
    assert not allowed(await backend.take(a))
    assert (await backend.take(b))[0].remaining == 1
    assert (await backend.take(other_scope))[0].remaining == 1


async def test_types_narrow_which_buckets_a_request_spends(backend: Harness) -> None:
    every = limit(10, HOUR)
    writes = RateLimit(LimitKey.CLIENT_IP, 2, HOUR, "writes", frozenset({"threads.create"}))
    route = ChatKitProxyRoute(
        name="chat",
        path="/chatkit",
        kind="chatkit_proxy",
        allowed_origins=frozenset(),
        allow_missing_origin=True,
        rate_limits=(every, writes),
        max_body_bytes=1000,
        target="http://127.0.0.1:9/chatkit",
    )

    def buckets(kind: str) -> list[Bucket]:
        return Limiter.buckets(route_limits(route), "192.0.2.1", None, kind)

    assert [b.limit.name for b in buckets("threads.list")] == [every.name]
    assert allowed(await backend.take(*buckets("threads.create")))
    assert allowed(await backend.take(*buckets("threads.create")))
    assert not allowed(await backend.take(*buckets("threads.create")))
    (read,) = await backend.take(*buckets("threads.list"))
    assert read.allowed and read.remaining == 10 - 2 - 1


async def test_unchanged_scopes_survive_retain(backend: Harness) -> None:
    kept, dropped = bucket(limit(3, HOUR), scope="kept"), bucket(limit(3, HOUR), scope="gone")
    await backend.take(kept, dropped)
    backend.storage.retain({"kept"})
    assert (await backend.take(kept))[0].remaining == 1
    # A dropped scope is forgotten on memory; on Redis nothing uses it again and TTLs
    # delete it, so either way the reported state is never wrong for a live scope.


async def test_agrees_with_the_reference_on_a_random_sequence(backend: Harness) -> None:
    """Same verdicts as a fresh MemoryStorage would give, on long windows (no drift)."""
    rng = random.Random(4)
    reference = MemoryStorage(clock=FakeClock())
    limits = [limit(3, HOUR), limit(7, HOUR, LimitKey.GLOBAL), limit(13, 2 * HOUR)]
    for _ in range(60):
        picked = rng.sample(limits, rng.randint(1, 3))
        bs = [bucket(rl, rng.choice(["a", "b"])) for rl in picked]
        got, want = await backend.take(*bs), reference.acquire_now(bs)
        assert [(v.allowed, v.remaining) for v in got] == [(v.allowed, v.remaining) for v in want]


async def test_state_stays_bounded(backend: Harness) -> None:
    if isinstance(backend.storage, MemoryStorage):
        rl = limit(5, HOUR)
        for i in range(20_000):
            backend.storage.acquire_now([bucket(rl, f"10.0.{i // 256}.{i % 256}")])
        assert backend.storage.tracked_keys() <= 1000
        return
    # Redis: every key carries a TTL no longer than its TAT horizon, then goes away.
    assert backend.redis is not None and isinstance(backend.storage, RedisStorage)
    b = bucket(limit(2, 0.3))
    await backend.take(b)
    ttl = backend.redis.command("PTTL", backend.storage.key(b))
    assert ttl is not None and 0 < int(ttl[1:]) <= 150
    deadline = time.monotonic() + 3
    while backend.redis.command("EXISTS", backend.storage.key(b)) != ":0":
        assert time.monotonic() < deadline, "the key never expired"
        await asyncio.sleep(0.05)
