"""Rate limits: which buckets a request spends, and what a sick shared backend means."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from ..errors import Unavailable
from ..policy import LimitKey, OnBackendError, RateLimit, RouteBase
from .base import BackendUnavailable, Bucket, LimitStorage, Verdict, tightest
from .memory import MemoryStorage

__all__ = [
    "BackendUnavailable",
    "Bucket",
    "LimitStorage",
    "Limiter",
    "MemoryStorage",
    "RouteLimit",
    "Verdict",
    "route_limits",
    "scope_of",
    "tightest",
]


class RouteLimit(NamedTuple):
    """A route's limit, compiled: its scope, and its one bucket when the key is `global`."""

    limit: RateLimit
    scope: str
    fixed: Bucket | None


def route_limits(route: RouteBase) -> tuple[RouteLimit, ...]:
    out = []
    for i, limit in enumerate(route.rate_limits):
        scope = scope_of(route, i)
        fixed = Bucket(scope, limit, "*") if limit.key is LimitKey.GLOBAL else None
        out.append(RouteLimit(limit, scope, fixed))
    return tuple(out)


def scope_of(route: RouteBase, index: int) -> str:
    """Counters live as long as the route name and the limit's definition stay the same."""
    limit = route.rate_limits[index]
    types = ",".join(sorted(limit.types)) if limit.types else "*"
    return f"{route.name}:{limit.key}:{limit.requests}/{limit.per_seconds:g}:{types}"


class Limiter:
    """Spends a request's buckets in its storage; falls back to local limits when told to."""

    __slots__ = ("_fallback", "_local", "_on_error", "_record_error", "storage")

    def __init__(
        self,
        storage: LimitStorage,
        *,
        on_error: OnBackendError = OnBackendError.ALLOW,
        fallback: MemoryStorage | None = None,
        record_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self._local = storage if isinstance(storage, MemoryStorage) else None
        self._on_error = on_error
        self._fallback = fallback
        self._record_error = record_error

    @staticmethod
    def buckets(
        limits: Sequence[RouteLimit], client_ip: str, origin: str | None, kind: str | None
    ) -> list[Bucket]:
        out: list[Bucket] = []
        for limit, scope, fixed in limits:
            if limit.types is not None and kind not in limit.types:
                continue
            if fixed is not None:
                out.append(fixed)
            elif limit.key is LimitKey.CLIENT_IP:
                out.append(Bucket(scope, limit, client_ip))
            else:
                out.append(Bucket(scope, limit, origin or "-"))
        return out

    def acquire_now(self, buckets: Sequence[Bucket]) -> list[Verdict] | None:
        """The verdicts at once when the storage is local; None when it must be awaited."""
        local = self._local
        return None if local is None else local.acquire_now(buckets)

    async def acquire(self, buckets: Sequence[Bucket]) -> list[Verdict]:
        try:
            return await self.storage.acquire(buckets)
        except BackendUnavailable:
            self._record_error()
            if self._on_error is OnBackendError.DENY or self._fallback is None:
                raise Unavailable("the rate limiter is unavailable") from None
            return self._fallback.acquire_now(buckets)

    def retain(self, scopes: set[str]) -> None:
        self.storage.retain(scopes)
        if self._fallback is not None:
            self._fallback.retain(scopes)
