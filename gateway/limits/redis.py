"""Limits shared by every replica: GCRA buckets in Redis, all of a request's in one script.

One EVALSHA per request, whatever the number of limits: the script reads the Redis
server's clock (`TIME`, so replicas with skewed clocks still agree), runs the same
arithmetic as `gcra()` on every bucket, and writes only if all of them admit (a refused
request spends nothing). Each key expires when its TAT passes — an expired bucket and a
full one are the same thing — so Redis memory stays bounded by the active clients.

A key stores `"<sec> <usec> <ahead>"`: the server time of the last write and how far
the TAT was ahead of it. Keeping the TAT relative (at most one window) instead of as an
absolute epoch time keeps the float arithmetic as precise as the memory backend's.

Calls are batched and timed by `pipeline` (why: see there); failures feed a circuit
breaker (`breaker`) and become `BackendUnavailable`, which the Limiter turns into the
local fallback or a 503 per `on_backend_error`. Token budgets (budgets.py) run their own
script through `run`: the same connections, breaker and patience, so Redis is one
integration that fails and recovers as one.

Redis Cluster is not supported: a request's keys (per-IP and global) hash to different
slots. A single primary (with replicas, Sentinel or a managed service) is what fits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ..policy import LimiterConfig
from .base import BackendUnavailable, Bucket, Verdict, gcra
from .breaker import CircuitBreaker
from .memory import _refund
from .redis_batches import Batches, Patience

log = logging.getLogger("gateway.limits")
T = TypeVar("T")

# KEYS: one per bucket. ARGV: interval and window (seconds) per bucket, as exact reprs.
# Returns each bucket's TAT relative to now before this request, as %.17g strings (exact
# doubles), from which Python derives the verdicts with the very same `gcra()`.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
local tats, news, admitted = {}, {}, true
for i = 1, #KEYS do
  local interval, per = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = 0
  local v = redis.call('GET', KEYS[i])
  if v then
    local s, u, ahead = string.match(v, '^(%d+) (%d+) (%S+)$')
    if s then
      tat = tonumber(ahead) - ((sec - tonumber(s)) + (usec - tonumber(u)) / 1000000)
    end
  end
  local new_tat = math.max(tat, 0) + interval
  if new_tat - per > 0 then admitted = false end
  tats[i] = string.format('%.17g', tat)
  news[i] = new_tat
end
if admitted then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], t[1] .. ' ' .. t[2] .. ' ' .. string.format('%.17g', news[i]),
      'PX', math.ceil(news[i] * 1000))
  end
end
return tats
"""

# A few warm connections, waited for rather than added to: a burst of requests must not
# open a burst of connections whose handshakes would eat the 50 ms budget. Batched, one
# connection already carries thousands of requests per second.
POOL_SIZE = 8
PATIENCE = 1.0  # the longest any call waits, even on an overloaded pod (see Patience)
MAX_KEY_BYTES = 200  # longer names are hashed: Redis copes, but memory per key should not grow


class RedisStorage:
    """`LimitStorage` on Redis. Connects lazily; `start()` warms the pool and the script."""

    __slots__ = ("_batches", "_client", "_patience", "_prefix", "_timeout", "breaker")

    def __init__(self, config: LimiterConfig, *, breaker: CircuitBreaker | None = None) -> None:
        self._prefix = config.key_prefix
        self._timeout = config.timeout_seconds
        # The URL may hold a password: it is revealed to redis-py only, never logged.
        # Every call runs under a timeout of ours (`Patience`), so no socket read timeout;
        # no retry with backoff either, only one immediate retry, which replaces a pooled
        # connection that a Redis restart left dead.
        pool = BlockingConnectionPool.from_url(
            config.redis_url.reveal(),
            max_connections=POOL_SIZE,
            timeout=None,
            socket_timeout=None,
            socket_connect_timeout=max(1.0, self._timeout),
            retry=Retry(NoBackoff(), 1),
        )
        self._client: Redis = Redis.from_pool(pool)
        # A batch may outlive its waiters: cancelling it would drop the connection and
        # cost a handshake just when the event loop is busiest.
        self._patience = max(PATIENCE, self._timeout)
        self._batches = Batches(self._client, GCRA_SCRIPT, self._patience)
        self.breaker = breaker or CircuitBreaker()

    def key(self, bucket: Bucket) -> str:
        name = f"{self._prefix}{bucket.scope}:{bucket.key}"
        if len(name.encode()) <= MAX_KEY_BYTES:
            return name
        return f"{self._prefix}#{hashlib.sha256(name.encode()).hexdigest()}"

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Verdict]:
        if not buckets:
            return []
        keys = [self.key(b) for b in buckets]
        args: list[str] = []
        for b in buckets:
            args += (repr(b.limit.per_seconds / b.limit.requests), repr(b.limit.per_seconds))
        raw = await self._call(lambda: self._batches.submit(keys, args))
        # The script ran gcra() at now = 0 on TATs relative to its clock; so do we.
        verdicts = [gcra(float(tat), 0.0, b.limit)[1] for tat, b in zip(raw, buckets, strict=True)]
        if all(v.allowed for v in verdicts):
            return verdicts
        return [_refund(v) for v in verdicts]

    def script(self, text: str) -> AsyncScript:
        """Another script on the limiter's connection (token budgets): see `run`."""
        return self._client.register_script(text)

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str]) -> Any:
        """One call of `script` under the same breaker and patience as the limits' own, so
        that everything the gateway keeps in Redis fails and recovers as one
        (BackendUnavailable when it does not answer). Not batched: budgets are two calls
        a model turn, not one per request. redis-py reloads a script Redis has lost."""
        return await self._call(lambda: script(keys=list(keys), args=list(args)))

    async def ping(self) -> bool:
        """For /readyz: an open breaker answers False at once; a cooled-down one probes."""
        try:
            await self._call(self._client.ping)
        except BackendUnavailable:
            return False
        return True

    def retain(self, scopes: set[str]) -> None:
        """Nothing to do: scope names encode the limit's definition, so a changed or
        removed limit simply stops touching its keys, and their TTLs delete them."""

    async def start(self) -> None:
        """Open the pool's connections and load the script before traffic, so the first
        requests' short timeout is not spent on handshakes. A Redis that is down is not
        fatal: requests meet the breaker and `on_backend_error` instead."""
        try:
            async with asyncio.timeout(max(2.0, self._timeout)):
                await self._client.script_load(GCRA_SCRIPT)
                await asyncio.gather(*(self._client.ping() for _ in range(POOL_SIZE)))
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("limiter backend not reachable at start", extra={"detail": _why(exc)})

    async def close(self) -> None:
        await self._batches.close()
        await self._client.aclose()

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.admit():
            raise BackendUnavailable("circuit open")
        batches = self._batches
        try:
            async with asyncio.timeout(None) as deadline:
                patience = Patience(
                    deadline, self._timeout, self._patience, lambda: batches.replied_at
                )
                try:
                    result = await make()
                finally:
                    patience.cancel()
        except (RedisError, OSError, TimeoutError, BackendUnavailable) as exc:
            self.breaker.failure(_why(exc))
            raise BackendUnavailable(_why(exc)) from None
        except BaseException:
            self.breaker.abandon()
            raise
        batches.replied_at = asyncio.get_running_loop().time()
        self.breaker.success()
        return result


def _why(exc: BaseException) -> str:
    """The error's class only: redis-py messages name the host, which stays out of logs."""
    if isinstance(exc, BackendUnavailable):
        return str(exc)
    return "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
