"""Operations endpoints: liveness, readiness, metrics and the OpenAPI document.

No origin checks, no limits. The OpenAPI document may be read from any origin (a docs
viewer on another site, a code generator in a browser): its resource is the one place where
aiohttp-cors applies — a fixed path with a fixed rule, unlike the policy's routes.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp_cors
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler

from ..limits.spend import LIMITER
from ..metrics import METRICS
from ..openapi import DocumentCache
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


def openapi_handler(metrics_path: str) -> Handler:
    """The document for the policy in force: a reload may add or move routes."""
    cache = DocumentCache(metrics_path)

    async def openapi(request: web.Request) -> web.StreamResponse:
        body = cache.get(request.app[RUNTIME].current.policy)
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-cache"}
        )

    return openapi


def setup_ops(app: web.Application, metrics_path: str) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(metrics_path, make_aiohttp_handler(app[METRICS].registry))
    cors = aiohttp_cors.setup(app)
    anyone = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        expose_headers=("X-Request-ID",), max_age=3600
    )
    cors.add(app.router.add_get("/openapi.json", openapi_handler(metrics_path)), {"*": anyone})
