"""RedisStorage on its own, against a real redis-server: URL forms, keys and TTLs,
NOSCRIPT recovery, batching, the fair timeout and the circuit breaker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection

from gateway.limits import Bucket
from gateway.limits.breaker import CircuitBreaker
from gateway.limits.redis import RedisStorage
from gateway.limits.redis_batches import Patience
from gateway.policy import Backend, LimiterConfig, LimitKey, RateLimit, Secret
from tests.support.redis_server import RedisServer, free_port, running_redis


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def config(url: str, **kw: Any) -> LimiterConfig:
    return LimiterConfig(backend=Backend.REDIS, redis_url=Secret(url), **kw)


ONE = Bucket("s", RateLimit(LimitKey.CLIENT_IP, 5, 3600.0, "x"), "192.0.2.1")


async def test_url_forms_password_database_and_unix_socket(redis_server: RedisServer) -> None:
    assert redis_server.command("CONFIG", "SET", "requirepass", "s3cret") == "+OK"
    forms = [
        f"redis://:s3cret@127.0.0.1:{redis_server.port}/3",
        f"unix://:s3cret@{redis_server.unix_socket}?db=2",
    ]
    for url in forms:
        storage = RedisStorage(config(url, timeout_seconds=1.0))
        try:
            assert await storage.ping()
            assert (await storage.acquire([ONE]))[0].remaining == 4
        finally:
            await storage.close()
    wrong = RedisStorage(config(f"redis://:nope@127.0.0.1:{redis_server.port}/0"))
    assert not await wrong.ping()
    await wrong.close()
    tls = RedisStorage(config("rediss://:pw@127.0.0.1:1/0"))
    assert "SSL" in tls._client.connection_pool.connection_class.__name__
    await tls.close()


async def test_keys_are_namespaced_with_ttls_and_survive_script_flush(
    redis_server: RedisServer,
) -> None:
    storage = RedisStorage(config(redis_server.url, key_prefix="app1:", timeout_seconds=1.0))
    try:
        await storage.acquire([ONE])
        assert storage.key(ONE) == "app1:s:192.0.2.1"
        ttl = redis_server.command("PTTL", storage.key(ONE))
        assert ttl is not None and 0 < int(ttl[1:]) <= 720_000
        long = Bucket("s", ONE.limit, "o" * 500)
        assert len(storage.key(long)) < 100 and storage.key(long).startswith("app1:#")
        assert redis_server.command("SCRIPT", "FLUSH") == "+OK"  # e.g. a Redis restart
        assert (await storage.acquire([ONE, long]))[0].remaining == 3
    finally:
        await storage.close()


async def test_concurrent_checks_share_a_pipeline_and_stay_exact(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = []
    original = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, *args: Any, **kw: Any) -> None:
        writes.append(1)
        await original(self, *args, **kw)

    storage = RedisStorage(config(redis_server.url, timeout_seconds=1.0))
    await storage.start()
    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    tight = Bucket("g", RateLimit(LimitKey.GLOBAL, 10, 3600.0, "all"), "*")
    loose = Bucket("i", RateLimit(LimitKey.CLIENT_IP, 20, 3600.0, "ip"), "192.0.2.9")
    try:
        results = await asyncio.gather(*(storage.acquire([tight, loose]) for _ in range(50)))
        assert sum(all(v.allowed for v in r) for r in results) == 10
        assert len(writes) < 5  # 50 scripts, one pipeline (or a few), not 50 writes
        assert (await storage.acquire([loose]))[0].remaining == 20 - 10 - 1
    finally:
        await storage.close()


async def test_a_stalled_event_loop_is_not_blamed_on_redis(redis_server: RedisServer) -> None:
    storage = RedisStorage(config(redis_server.url))  # the default 50 ms timeout
    await storage.start()
    many = Bucket("m", RateLimit(LimitKey.CLIENT_IP, 100, 3600.0, "m"), "192.0.2.7")
    loop = asyncio.get_running_loop()
    try:
        for _ in range(4):
            loop.call_soon(time.sleep, 0.2)  # the pod is frozen (CPU throttled) for 200 ms
            (verdict,) = await storage.acquire([many])  # Redis had answered: still shared
            assert verdict.allowed
        assert storage.breaker.state == "closed"
        assert (await storage.acquire([many]))[0].remaining == 100 - 5
    finally:
        await storage.close()


async def burn_cpu(until: float) -> None:
    """Keeps this process on the CPU in 2 ms slices, as a saturated pod's loop would be."""
    while time.monotonic() < until:
        end = time.monotonic() + 0.002
        while time.monotonic() < end:
            pass
        await asyncio.sleep(0)


@pytest.mark.parametrize("answering", [True, False])
async def test_patience_waits_longer_only_when_we_are_busy_and_redis_answers(
    answering: bool,
) -> None:
    loop = asyncio.get_running_loop()
    burner = asyncio.create_task(burn_cpu(time.monotonic() + 0.5))
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:
            replied = (lambda: loop.time()) if answering else (lambda: -1e9)
            patience = Patience(deadline, 0.05, 0.3, replied)
            try:
                await loop.create_future()  # an answer that never comes
            finally:
                patience.cancel()
    waited = loop.time() - start
    await burner
    # Busy with Redis answering: extended up to the limit. Redis silent: on time.
    assert (0.25 < waited < 0.45) if answering else (waited < 0.15), waited


def test_circuit_breaker_opens_probes_once_and_recovers() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown=1.0, clock=lambda: now[0])
    breaker.failure("timeout")
    assert breaker.admit() and breaker.state == "closed"
    breaker.failure("timeout")
    assert breaker.state == "open" and not breaker.admit()
    now[0] = 1.5
    assert breaker.state == "half-open"
    assert breaker.admit() and not breaker.admit()  # one probe at a time
    breaker.failure("timeout")  # probe failed: another full cool-down
    now[0] = 2.0
    assert not breaker.admit()
    now[0] = 2.6
    assert breaker.admit()
    breaker.abandon()  # a cancelled probe frees the slot
    assert breaker.admit()
    breaker.success()
    assert breaker.state == "closed" and breaker.admit()


async def test_breaker_fails_fast_without_touching_the_network() -> None:
    storage = RedisStorage(config(f"redis://127.0.0.1:{free_port()}/0"))  # nobody listens
    try:
        for _ in range(3):
            with pytest.raises(Exception, match=r"ConnectionError|timeout"):
                await storage.acquire([ONE])
        assert storage.breaker.state == "open"
        start = time.monotonic()
        with pytest.raises(Exception, match="circuit open"):
            await storage.acquire([ONE])
        assert not await storage.ping()
        assert time.monotonic() - start < 0.01
    finally:
        await storage.close()
