"""What `/readyz` asks besides the limiter: a list on the app each subsystem adds its own
check to while it runs (Home Assistant's style), so the operations endpoints import no
subsystem. A check answers None when ready, else the status `/readyz` shows with its 503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from .policy import Policy

ReadinessCheck = Callable[[Policy], Awaitable[str | None]]

READINESS = web.AppKey("readiness", list[ReadinessCheck])


async def not_ready(app: web.Application, policy: Policy) -> str | None:
    """The first failing check's status, or None."""
    for check in app[READINESS]:
        status = await check(policy)
        if status is not None:
            return status
    return None
