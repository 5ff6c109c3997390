"""In-process limiter storage: GCRA buckets in two generations of plain dicts.

Memory stays bounded however many clients arrive: when the young generation fills half
of `max_keys`, the old one is dropped whole and the young one becomes old. A bucket in
use is promoted back to the young generation, so only clients idle for a whole generation
are forgotten — and a forgotten client starts with a full quota, the same as one whose
TAT has passed. That is O(1) per request with no per-entry bookkeeping, which an LRU
(OrderedDict: two extra pointers per key) would need.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .base import Bucket, Verdict, gcra


class _Generations:
    __slots__ = ("half", "old", "young")

    def __init__(self, max_keys: int) -> None:
        self.half = max(1, max_keys // 2)
        self.young: dict[str, float] = {}
        self.old: dict[str, float] = {}

    def get(self, key: str) -> float:
        tat = self.young.get(key)
        return self.old.get(key, 0.0) if tat is None else tat

    def put(self, key: str, tat: float) -> None:
        """Store and promote to the young generation (refused clients too: see module doc)."""
        young = self.young
        if key not in young:
            self.old.pop(key, None)
            if len(young) >= self.half:
                self.old = young
                self.young = young = {}
        young[key] = tat

    def __len__(self) -> int:
        return len(self.young) + len(self.old)


class MemoryStorage:
    """Per-process buckets; `clock` is monotonic seconds (tests pass a fake one)."""

    __slots__ = ("_clock", "_max_keys", "_scopes")

    def __init__(self, max_keys: int = 1_000_000, clock: Callable[[], float] | None = None):
        self._max_keys = max_keys
        self._clock = clock or time.monotonic
        self._scopes: dict[str, _Generations] = {}

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Verdict]:
        return self.acquire_now(buckets)

    def acquire_now(self, buckets: Sequence[Bucket]) -> list[Verdict]:
        """Synchronous core, also used as the Redis backend's local fallback."""
        now = self._clock()
        scopes = self._scopes
        spent: list[tuple[_Generations, str, float, float]] = []
        verdicts: list[Verdict] = []
        admitted = True
        for bucket in buckets:
            store = scopes.get(bucket.scope)
            if store is None:
                store = scopes[bucket.scope] = _Generations(self._max_keys)
            tat = store.get(bucket.key)
            new_tat, verdict = gcra(tat, now, bucket.limit)
            spent.append((store, bucket.key, tat, new_tat))
            verdicts.append(verdict)
            admitted = admitted and verdict.allowed
        if admitted:
            for store, key, _, new_tat in spent:
                store.put(key, new_tat)
            return verdicts
        # All or nothing: an exhausted limit must not spend the others' quota.
        for store, key, tat, _ in spent:
            store.put(key, tat)
        return [_refund(v) for v in verdicts]

    async def ping(self) -> bool:
        return True

    def retain(self, scopes: set[str]) -> None:
        for scope in list(self._scopes):
            if scope not in scopes:
                del self._scopes[scope]

    def tracked_keys(self) -> int:
        return sum(len(g) for g in self._scopes.values())

    async def close(self) -> None:
        self._scopes.clear()


def _refund(verdict: Verdict) -> Verdict:
    """An admitted verdict of a refused request: its unit was not spent after all."""
    if not verdict.allowed:
        return verdict
    return Verdict(verdict.limit, True, verdict.remaining + 1, verdict.reset_seconds, 0.0)
