"""Rate limits: which buckets a request spends, and what a sick shared backend means."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import Unavailable
from ..policy import LimitKey, OnBackendError, Route
from .base import BackendUnavailable, Bucket, LimitStorage, Verdict, tightest, whole_seconds
from .memory import MemoryStorage

__all__ = [
    "BackendUnavailable",
    "Bucket",
    "LimitStorage",
    "Limiter",
    "MemoryStorage",
    "Verdict",
    "scope_of",
    "tightest",
    "whole_seconds",
]


def scope_of(route: Route, index: int) -> str:
    """Counters live as long as the route name and the limit's definition stay the same."""
    limit = route.rate_limits[index]
    types = ",".join(sorted(limit.types)) if limit.types else "*"
    return f"{route.name}:{limit.key}:{limit.requests}/{limit.per_seconds:g}:{types}"


class Limiter:
    """Spends a request's buckets in its storage; falls back to local limits when told to."""

    __slots__ = ("_fallback", "_on_error", "_record_error", "storage")

    def __init__(
        self,
        storage: LimitStorage,
        *,
        on_error: OnBackendError = OnBackendError.ALLOW,
        fallback: MemoryStorage | None = None,
        record_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.storage = storage
        self._on_error = on_error
        self._fallback = fallback
        self._record_error = record_error

    @staticmethod
    def buckets(
        route: Route, scopes: Sequence[str], client_ip: str, origin: str | None, kind: str | None
    ) -> list[Bucket]:
        out: list[Bucket] = []
        for limit, scope in zip(route.rate_limits, scopes, strict=True):
            if limit.types is not None and kind not in limit.types:
                continue
            if limit.key is LimitKey.CLIENT_IP:
                key = client_ip
            elif limit.key is LimitKey.ORIGIN:
                key = origin or "-"
            else:
                key = "*"
            out.append(Bucket(scope, limit, key))
        return out

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
