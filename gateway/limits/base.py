"""The limiter's storage interface and the GCRA arithmetic every backend shares.

GCRA ("generic cell rate algorithm") keeps one number per bucket — the theoretical
arrival time (TAT) of the next request — and admits `requests` per `per` seconds with
bursts up to the full quota. One float per client is what keeps the memory backend small
and lets the Redis backend do every limit of a request in one script call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from ..policy import RateLimit


class Bucket(NamedTuple):
    """One limit applied to one client key (an IP, an origin, or the route as a whole).
    (Tuples: made per request, and cheaper to make than frozen dataclasses.)"""

    scope: str  # route name + limit identity: which counters a reload may keep
    limit: RateLimit
    key: str


class Verdict(NamedTuple):
    limit: RateLimit
    allowed: bool
    remaining: int
    reset_seconds: float  # until the full quota is back
    retry_after: float  # until one more request is admitted (0 when allowed)


class LimitStorage(Protocol):
    """Takes one unit from every bucket, or from none if any is exhausted (all or nothing)."""

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Verdict]: ...

    async def ping(self) -> bool: ...

    def retain(self, scopes: set[str]) -> None:
        """Forget the state of every scope not listed (limits a reload removed or changed)."""

    async def close(self) -> None: ...


class BackendUnavailable(Exception):
    """The shared backend did not answer in time; the limiter decides what that means."""


_EPSILON = 1e-6


def gcra(tat: float, now: float, limit: RateLimit) -> tuple[float, Verdict]:
    """The new TAT and the verdict for one request arriving at `now`."""
    interval = limit.interval
    start = tat if tat > now else now  # max(), without the call
    new_tat = start + interval
    wait = new_tat - limit.per_seconds - now
    if wait > _EPSILON:  # float sums like now + w - w need not equal now
        return tat, Verdict(limit, False, 0, start - now, wait)
    remaining = int((limit.per_seconds - (new_tat - now)) / interval + 1e-9)
    return new_tat, Verdict(limit, True, remaining, new_tat - now, 0.0)


def tightest(verdicts: Sequence[Verdict]) -> Verdict | None:
    """The verdict to report in RateLimit headers: a refusal first, then the fewest left."""
    best: Verdict | None = None
    for v in verdicts:
        if best is None:
            best = v
        elif v.allowed != best.allowed:
            if not v.allowed:
                best = v
        elif not v.allowed:
            if v.retry_after > best.retry_after:
                best = v
        elif v.remaining < best.remaining or (
            v.remaining == best.remaining and v.reset_seconds > best.reset_seconds
        ):
            best = v
    return best
