"""Operations endpoints: liveness, readiness and metrics. No origin checks, no limits."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from ..limits.middleware import LIMITER
from ..metrics import METRICS
from ..policy import OnBackendError
from ..runtime import RUNTIME


@dataclass(slots=True)
class Lifecycle:
    """Set by the process runner: draining starts at SIGTERM."""

    draining: bool = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    app = request.app
    if app[LIFECYCLE].draining:
        return web.json_response({"status": "draining"}, status=503)
    policy = app[RUNTIME].current.policy
    if not await app[LIMITER].storage.ping():
        if policy.limiter.on_backend_error is OnBackendError.DENY:
            return web.json_response({"status": "limiter backend down"}, status=503)
        return web.json_response({"status": "ok", "limiter": "degraded (local limits)"})
    return web.json_response({"status": "ok"})


def setup_ops(app: web.Application, metrics_path: str) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(metrics_path, make_aiohttp_handler(app[METRICS].registry))
