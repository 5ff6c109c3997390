"""Per-client slots: what one client may hold open at once on one route.

ChatKit streams (proxied or served), uploads and image previews each hold a connection, a
handler and, for the agent, a model call or a buffer; a count per client and route bounds
them. `async with slots.hold(STREAMS, …)` takes a slot or refuses (429 with `Retry-After`,
counted in `rate_limited_total`), keeps the open-streams gauge, and gives the slot back
however the answer ends. In memory: a replica counts its own clients' open answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from .errors import RateLimited
from .metrics import Metrics

# Open streams and uploads end in seconds to minutes: a short, honest guess.
_RETRY_AFTER = "5"


@dataclass(frozen=True, slots=True)
class SlotKind:
    limit: str  # the `limit` label of rate_limited_total
    refusal: str  # the 429's message
    key_part: str  # keeps the kinds' counters apart
    gauged: bool = False  # counted in chatkit_gateway_open_streams


STREAMS = SlotKind("streams", "Too many open streams", "", gauged=True)
UPLOADS = SlotKind("uploads", "Too many uploads at once", "upload\x00")
PREVIEWS = SlotKind("previews", "Too many previews at once", "preview\x00")


class Slots:
    """App-wide: the open slots per key (a kind, a route, a client)."""

    __slots__ = ("_held", "_metrics")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._held: dict[str, int] = {}

    @staticmethod
    def key(kind: SlotKind, route: str, client_ip: str) -> str:
        return f"{route}\x00{kind.key_part}{client_ip}"

    def full(self, key: str, cap: int | None) -> bool:
        return cap is not None and self._held.get(key, 0) >= cap

    def take(self, key: str, cap: int | None) -> bool:
        """One more slot for `key`, unless it already holds `cap`."""
        if self.full(key, cap):
            return False
        self._held[key] = self._held.get(key, 0) + 1
        return True

    def release(self, key: str) -> None:
        count = self._held.pop(key, 1) - 1
        if count > 0:
            self._held[key] = count

    def refuse(self, kind: SlotKind, route: str) -> RateLimited:
        """The 429 for a client that holds all its slots of `kind` (counted)."""
        self._metrics.rate_limited.labels(route, kind.limit).inc()
        return RateLimited(kind.refusal, headers={"Retry-After": _RETRY_AFTER})

    def check(self, kind: SlotKind, route: str, client_ip: str, cap: int | None) -> None:
        """Refuses early, before anything is spent; `hold` is the binding check."""
        if self.full(self.key(kind, route, client_ip), cap):
            raise self.refuse(kind, route)

    @contextlib.asynccontextmanager
    async def hold(
        self, kind: SlotKind, route: str, client_ip: str, cap: int | None
    ) -> AsyncIterator[None]:
        """One slot, for an `async with` (RateLimited on entry when none is free)."""
        key = self.key(kind, route, client_ip)
        if not self.take(key, cap):
            raise self.refuse(kind, route)
        if kind.gauged:
            self._metrics.open_streams.labels(route).inc()
        try:
            yield
        finally:
            if kind.gauged:
                self._metrics.open_streams.labels(route).dec()
            self.release(key)


SLOTS = web.AppKey("slots", Slots)
