"""The `limits` library behind this project's LimitStorage, and a limiter-level benchmark.

Used by `python -m bench.redis_bench`; `limits` is imported only here and only when it is
installed (`pip install limits`), since the gateway itself does not depend on it.
"""

from __future__ import annotations

import asyncio
import importlib
import statistics
import time
from collections.abc import Sequence
from typing import Any

from gateway.limits import Bucket, LimitStorage, Verdict
from gateway.limits.redis import RedisStorage
from gateway.policy import Backend, LimiterConfig, LimitKey, RateLimit, Secret

STORAGES = ("redis", "limits-sliding", "limits-moving")


class LimitsStorage:
    """`limits` behind LimitStorage, used as well as it allows: all limits' window stats
    in parallel (1 round trip each), then, if every one has room, all hits in parallel
    (1 more each). Not atomic across limits or replicas: a race can spend one limit
    while another refuses, which the hand-written script cannot do."""

    def __init__(self, url: str, strategy: str) -> None:
        lim = importlib.import_module("limits")
        storage = importlib.import_module("limits.aio.storage")
        strategies = importlib.import_module("limits.aio.strategies")
        self._item = lim.RateLimitItemPerSecond
        self._storage = storage.RedisStorage(f"async+{url}", implementation="redispy")
        cls = "SlidingWindowCounter" if strategy == "sliding" else "MovingWindow"
        self._limiter = getattr(strategies, f"{cls}RateLimiter")(self._storage)
        self._items: dict[RateLimit, Any] = {}

    def _of(self, limit: RateLimit) -> Any:
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = self._item(limit.requests, int(limit.per_seconds))
        return item

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Verdict]:
        items = [(self._of(b.limit), b.scope, b.key) for b in buckets]
        stats = await asyncio.gather(*(self._limiter.get_window_stats(*i) for i in items))
        now = time.time()
        if all(s.remaining >= 1 for s in stats):
            await asyncio.gather(*(self._limiter.hit(*i) for i in items))
            return [
                Verdict(b.limit, True, s.remaining - 1, max(0.0, s.reset_time - now), 0.0)
                for b, s in zip(buckets, stats, strict=True)
            ]
        return [
            Verdict(b.limit, s.remaining >= 1, s.remaining, max(0.0, s.reset_time - now), 1.0)
            for b, s in zip(buckets, stats, strict=True)
        ]

    async def ping(self) -> bool:
        return bool(await self._storage.check())

    def retain(self, scopes: set[str]) -> None:
        return None

    async def close(self) -> None:
        return None


async def limiter_level(url: str, n: int) -> dict[str, dict[str, float]]:
    """Each storage in-process: sequential latency and 32-way throughput of one check."""
    connection = importlib.import_module("redis.asyncio.connection").AbstractConnection
    original, sent = connection.send_packed_command, [0]

    async def counted(self: Any, *args: Any, **kw: Any) -> Any:
        sent[0] += 1
        return await original(self, *args, **kw)

    connection.send_packed_command = counted
    limits = [
        RateLimit(LimitKey.CLIENT_IP, 10**9, 3600.0, "ip"),
        RateLimit(LimitKey.GLOBAL, 10**9, 86400.0, "all"),
    ]
    out: dict[str, dict[str, float]] = {}
    for name in STORAGES:
        storage: LimitStorage
        if name == "redis":
            cfg = LimiterConfig(Backend.REDIS, Secret(url), timeout_seconds=1.0)
            storage = RedisStorage(cfg)
            await storage.start()
        else:
            storage = LimitsStorage(url, name.removeprefix("limits-"))

        def check(i: int) -> list[Bucket]:
            return [Bucket(f"s{j}", lim, f"10.1.{i % 97}.{i % 89}") for j, lim in enumerate(limits)]

        for i in range(200):
            await storage.acquire(check(i))
        sent[0], lat = 0, []
        for i in range(n):
            t0 = time.perf_counter()
            await storage.acquire(check(i))
            lat.append(time.perf_counter() - t0)
        trips, sent[0] = sent[0] / n, 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for start in range(0, n, 32):
            await asyncio.gather(*(storage.acquire(check(i)) for i in range(start, start + 32)))
        q = statistics.quantiles(lat, n=100)
        out[name] = {
            "round_trips": trips,
            "p50_us": q[49] * 1e6,
            "p99_us": q[98] * 1e6,
            "checks_per_s": n / (time.perf_counter() - t0),
            "cpu_us": (time.process_time() - cpu0) / n * 1e6,
            "writes_32": sent[0] / n,
        }
        await storage.close()
    connection.send_packed_command = original
    return out
