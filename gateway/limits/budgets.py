"""Token budgets of `chatkit_agent` routes: model tokens per user, client or route.

A budget is a leaky bucket of `tokens` per `per` seconds, kept as one number per key — the
time at which everything spent so far will have drained (as GCRA keeps it for requests).
A turn *reserves* its estimated cost before the model is called: all of its buckets or
none, and only if none is full. After the answer it *settles*: the usage OpenAI reported
minus what it reserved (a refund when the estimate was high, or when OpenAI refused the
call and billed nothing). Parallel turns therefore see each other's reservations, and a
budget is overshot by at most the last reservation admitted, plus whatever turns then in
flight used beyond their estimates (README: "one answer's size").

Memory (one replica) and Redis (shared by replicas, in the limiter's own connection,
circuit breaker and patience: `RedisStorage.run`, reading the server's `TIME` so skewed
clocks agree) keep the same arithmetic. A Redis that does not answer follows
`limiter.on_backend_error`, as the rate limits do: `allow` counts in the replica's memory
meanwhile, `deny` refuses the turn (503) before the model is called.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from ..errors import Unavailable
from ..policy import LimiterConfig, OnBackendError
from .base import BackendUnavailable, LimitStorage
from .redis import RedisStorage


class BudgetBucket(NamedTuple):
    key: str  # e.g. "assistant:user_200000_tokens_per_1d:u_ab12…"
    tokens: int
    per_seconds: float


class BudgetStorage(Protocol):
    async def reserve(self, buckets: Sequence[BudgetBucket], tokens: int) -> float | None:
        """All or nothing: `tokens` taken from every bucket when none is full (None), else
        the seconds until the fullest has room again (nothing taken). 0 tokens: a check."""

    async def settle(self, buckets: Sequence[BudgetBucket], tokens: int) -> None:
        """`tokens` added to every bucket whatever its level; negative: a refund, down to
        empty at most."""


def retry_after(buckets: Sequence[BudgetBucket], levels: Sequence[float]) -> float | None:
    """None when every bucket has room; else the seconds until the fullest has some.
    `levels`: seconds until each bucket is empty (0: nothing spent)."""
    wait = None
    for bucket, ahead in zip(buckets, levels, strict=True):
        over = ahead - bucket.per_seconds
        if over >= 0:
            interval = bucket.per_seconds / bucket.tokens
            wait = max(wait or 0.0, over + interval)
    return wait


class MemoryBudgets:
    """One replica's budgets; `clock` is monotonic seconds (tests pass one they move)."""

    __slots__ = ("_clock", "_drained", "_max_keys")

    def __init__(
        self, max_keys: int = 1_000_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._drained: dict[str, float] = {}
        self._max_keys = max_keys
        self._clock = clock

    async def reserve(self, buckets: Sequence[BudgetBucket], tokens: int) -> float | None:
        now = self._clock()
        levels = [max(0.0, self._drained.get(b.key, now) - now) for b in buckets]
        wait = retry_after(buckets, levels)
        if wait is None and tokens:
            self._add(buckets, levels, tokens, now)
        return wait

    async def settle(self, buckets: Sequence[BudgetBucket], tokens: int) -> None:
        now = self._clock()
        levels = [max(0.0, self._drained.get(b.key, now) - now) for b in buckets]
        self._add(buckets, levels, tokens, now)

    def _add(
        self, buckets: Sequence[BudgetBucket], levels: list[float], tokens: int, now: float
    ) -> None:
        if len(self._drained) >= self._max_keys:  # drained keys and absent ones are alike
            self._drained = {k: t for k, t in self._drained.items() if t > now}
        for b, ahead in zip(buckets, levels, strict=True):
            new = ahead + tokens * b.per_seconds / b.tokens
            if new > 0:
                self._drained[b.key] = now + new
            else:
                self._drained.pop(b.key, None)


# KEYS: buckets. ARGV[1]: "reserve" (only if none is full) or "settle" (always); ARGV[2]:
# tokens (negative: a refund); ARGV[3]: now in seconds, "" for the server's TIME (tests
# move a clock of their own); then per bucket its seconds per token and its window.
# A key holds the absolute time at which it drains, and expires then. Returns each
# bucket's level (seconds until empty) before the call, from which Python derives the
# verdict with the very same `retry_after`.
BUDGET_SCRIPT = """
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[3])
end
local cost = tonumber(ARGV[2])
local levels, admitted = {}, true
for i = 1, #KEYS do
  local drained = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  levels[i] = math.max(drained - now, 0)
  if ARGV[1] == 'reserve' and levels[i] - tonumber(ARGV[3 + 2 * i]) >= 0 then
    admitted = false
  end
end
if admitted and cost ~= 0 then
  for i = 1, #KEYS do
    local new = levels[i] + cost * tonumber(ARGV[2 + 2 * i])
    if new > 0 then
      redis.call('SET', KEYS[i], string.format('%.17g', now + new), 'PX', math.ceil(new * 1000))
    else
      redis.call('DEL', KEYS[i])
    end
  end
end
local out = {}
for i = 1, #KEYS do out[i] = string.format('%.17g', levels[i]) end
return out
"""


class RedisBudgets:
    """Budgets in the limiter's Redis, through its client and breaker (`RedisStorage.run`);
    raises BackendUnavailable, which `Budgets` turns into the limiter's failure rule."""

    __slots__ = ("_clock", "_prefix", "_script", "_storage")

    def __init__(
        self,
        storage: RedisStorage,
        key_prefix: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._storage = storage
        self._script = storage.script(BUDGET_SCRIPT)
        self._prefix = key_prefix + "tokens:"
        self._clock = clock

    async def reserve(self, buckets: Sequence[BudgetBucket], tokens: int) -> float | None:
        return retry_after(buckets, await self._eval("reserve", buckets, tokens))

    async def settle(self, buckets: Sequence[BudgetBucket], tokens: int) -> None:
        await self._eval("settle", buckets, tokens)

    async def _eval(self, mode: str, buckets: Sequence[BudgetBucket], tokens: int) -> list[float]:
        keys = [self._prefix + hashlib.sha256(b.key.encode()).hexdigest()[:32] for b in buckets]
        args = [mode, str(tokens), repr(self._clock()) if self._clock else ""]
        for b in buckets:
            args += (repr(b.per_seconds / b.tokens), repr(b.per_seconds))
        raw = await self._storage.run(self._script, keys, args)
        return [float(v) for v in raw]


class Budgets:
    """A gateway's token budgets and what a sick shared backend means for them: the
    limiter's own rule (`on_backend_error`), counted in the same metric."""

    __slots__ = ("_fallback", "_on_error", "_record_error", "storage")

    def __init__(
        self,
        storage: BudgetStorage,
        *,
        on_error: OnBackendError = OnBackendError.ALLOW,
        fallback: MemoryBudgets | None = None,
        record_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self._on_error = on_error
        self._fallback = fallback
        self._record_error = record_error

    async def reserve(self, buckets: Sequence[BudgetBucket], tokens: int) -> float | None:
        """None: reserved (or, with 0 tokens, room left); else the seconds to wait.
        Unavailable (503) when the backend fails and the rule is `deny`."""
        if not buckets:
            return None
        try:
            return await self.storage.reserve(buckets, tokens)
        except BackendUnavailable:
            self._record_error()
            if self._on_error is OnBackendError.DENY or self._fallback is None:
                raise Unavailable("the token budgets are unavailable") from None
            return await self._fallback.reserve(buckets, tokens)

    async def settle(self, buckets: Sequence[BudgetBucket], tokens: int) -> None:
        """Never fails: the model has answered; a backend down meanwhile is told locally."""
        if not buckets or not tokens:
            return
        try:
            await self.storage.settle(buckets, tokens)
        except BackendUnavailable:
            self._record_error()
            if self._fallback is not None:
                await self._fallback.settle(buckets, tokens)


def budgets_for(
    config: LimiterConfig, limits: LimitStorage | None, record_error: Callable[[], None]
) -> Budgets:
    """Budgets beside the rate limits (`limits`: the limiter's storage): in their Redis
    when they are in Redis, else in this process's memory."""
    if isinstance(limits, RedisStorage):
        return Budgets(
            RedisBudgets(limits, config.key_prefix),
            on_error=config.on_backend_error,
            fallback=MemoryBudgets(config.max_tracked_keys),
            record_error=record_error,
        )
    return Budgets(MemoryBudgets(config.max_tracked_keys))
