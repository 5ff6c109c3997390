"""Token budgets of `chatkit_agent` routes: model tokens per user, client or route.

A budget is a leaky bucket of `tokens` per `per` seconds, kept as one number per key — the
time at which everything spent so far will have drained (as GCRA keeps it for requests).
`check` runs before the model is called: a key whose bucket is full is refused, with the
time until it has room again. `charge` runs after the answer, with the usage OpenAI
reported, and always succeeds: a turn cannot be priced before it has run, so one answer
may overshoot the budget by its own size, never more (the next check refuses).

Memory (one replica) and Redis (shared by replicas, reading the server's `TIME` so skewed
clocks agree) keep the same arithmetic. A Redis that does not answer: the replica's own
memory counts instead, and the failure is counted — budgets are cost control, not a
reason to refuse every visitor.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..policy import LimiterConfig

log = logging.getLogger("gateway.limits")


class BudgetBucket(NamedTuple):
    key: str  # e.g. "assistant:user_200000_tokens_per_1d:u_ab12…"
    tokens: int
    per_seconds: float


class BudgetStorage(Protocol):
    async def levels(self, buckets: Sequence[BudgetBucket]) -> list[float]:
        """Seconds until each bucket is empty (0: nothing spent)."""

    async def charge(self, buckets: Sequence[BudgetBucket], tokens: int) -> None: ...

    async def close(self) -> None: ...


def retry_after(buckets: Sequence[BudgetBucket], levels: Sequence[float]) -> float | None:
    """None when every bucket has room; else the seconds until the fullest has some."""
    wait = None
    for bucket, ahead in zip(buckets, levels, strict=True):
        over = ahead - bucket.per_seconds
        if over >= 0:
            interval = bucket.per_seconds / bucket.tokens
            wait = max(wait or 0.0, over + interval)
    return wait


class MemoryBudgets:
    __slots__ = ("_clock", "_drained", "_max_keys")

    def __init__(
        self, max_keys: int = 1_000_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._drained: dict[str, float] = {}
        self._max_keys = max_keys
        self._clock = clock

    async def levels(self, buckets: Sequence[BudgetBucket]) -> list[float]:
        now = self._clock()
        return [max(0.0, self._drained.get(b.key, now) - now) for b in buckets]

    async def charge(self, buckets: Sequence[BudgetBucket], tokens: int) -> None:
        now = self._clock()
        if len(self._drained) >= self._max_keys:
            self._drained = {k: t for k, t in self._drained.items() if t > now}
        for b in buckets:
            start = max(self._drained.get(b.key, now), now)
            self._drained[b.key] = start + tokens * b.per_seconds / b.tokens

    async def close(self) -> None:
        return None


# KEYS: buckets; ARGV[1]: tokens (0: read only); then seconds per token of each bucket.
# A key holds the absolute server time (seconds) at which it drains, and expires then.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local drained = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  local start = math.max(drained, now)
  if cost > 0 then
    local new = start + cost * tonumber(ARGV[i + 1])
    redis.call('SET', KEYS[i], string.format('%.17g', new), 'PX', math.ceil((new - now) * 1000))
    start = new
  end
  out[i] = string.format('%.17g', start - now)
end
return out
"""


class RedisBudgets:
    """Budgets in the limiter's Redis; falls back to memory while it does not answer."""

    __slots__ = ("_client", "_fallback", "_on_error", "_prefix", "_timeout")

    def __init__(self, config: LimiterConfig, on_error: Callable[[], None]) -> None:
        self._client: Redis = Redis.from_url(
            config.redis_url.reveal(),
            socket_timeout=max(config.timeout_seconds, 0.2),
            socket_connect_timeout=max(config.timeout_seconds, 0.2),
        )
        self._prefix = config.key_prefix + "tokens:"
        self._timeout = max(config.timeout_seconds * 4, 0.2)
        self._fallback = MemoryBudgets(config.max_tracked_keys)
        self._on_error = on_error

    def _keys(self, buckets: Sequence[BudgetBucket]) -> list[str]:
        return [self._prefix + hashlib.sha256(b.key.encode()).hexdigest()[:32] for b in buckets]

    async def _eval(self, buckets: Sequence[BudgetBucket], tokens: int) -> list[float] | None:
        args = [str(tokens), *(repr(b.per_seconds / b.tokens) for b in buckets)]
        try:
            async with asyncio.timeout(self._timeout):
                raw = await self._client.eval(_SCRIPT, len(buckets), *self._keys(buckets), *args)
        except (RedisError, OSError, TimeoutError) as exc:
            self._on_error()
            log.warning("token budgets: Redis unavailable (%s)", type(exc).__name__)
            return None
        return [float(v) for v in raw]

    async def levels(self, buckets: Sequence[BudgetBucket]) -> list[float]:
        found = await self._eval(buckets, 0)
        return found if found is not None else await self._fallback.levels(buckets)

    async def charge(self, buckets: Sequence[BudgetBucket], tokens: int) -> None:
        if await self._eval(buckets, tokens) is None:
            await self._fallback.charge(buckets, tokens)

    async def close(self) -> None:
        await self._client.aclose()
