"""`upstream.max_rate`: one smoothing limiter for every call toward OpenAI.

The app owns it (its own AppKey): the token routes' client and the agent routes' model
calls wait on the same one, so the policy's rate holds for all of them; a reload that
changes the rate swaps it (reload.py).
"""

from __future__ import annotations

from aiohttp import web
from aiolimiter import AsyncLimiter

from ..policy import UpstreamConfig


class OutboundRate:
    __slots__ = ("_limiter", "_rate")

    def __init__(self, config: UpstreamConfig) -> None:
        self._rate = config.max_rate
        self._limiter = _limiter_for(config)

    def configure(self, config: UpstreamConfig) -> None:
        """A reloaded upstream section: the limiter is kept (with its level) if unchanged."""
        if config.max_rate != self._rate:
            self._rate = config.max_rate
            self._limiter = _limiter_for(config)

    async def wait(self) -> None:
        """A slot of `upstream.max_rate` (none to wait for without one)."""
        if self._limiter is not None:
            await self._limiter.acquire()


def _limiter_for(config: UpstreamConfig) -> AsyncLimiter | None:
    rate = config.max_rate
    return AsyncLimiter(rate.requests, rate.per_seconds) if rate else None


OUTBOUND = web.AppKey("outbound_rate", OutboundRate)
