"""Operations endpoints: liveness, readiness, metrics, the OpenAPI document and the index.

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
from ..runtime import INDEX_PATH, RUNTIME
from .dispatch import dispatch


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


async def index(request: web.Request) -> web.StreamResponse:
    """`/`: what answers here and where to read on, for whoever opens the printed link."""
    runtime = request.app[RUNTIME].current
    if INDEX_PATH not in runtime.ops_paths:  # a policy route owns `/`
        return await dispatch(request)
    policy = runtime.policy
    return web.json_response(
        {
            "service": "chatkit-gateway",
            "about": "Edge gateway for embedded OpenAI ChatKit and Realtime widgets: "
            "origin checks and rate limits in front of OpenAI and ChatKit servers.",
            "upstream": "stub" if policy.stub_upstream else "openai",
            "routes": [{"name": r.name, "path": r.path, "kind": r.kind} for r in policy.routes],
            "openapi": "/openapi.json",
            "healthz": "/healthz",
            "readyz": "/readyz",
            "metrics": request.app[METRICS_PATH],
            "docs": "README.md of chatkit-gateway; under `make run` the demo pages are at "
            "http://localhost:8000/",
        },
        headers={"Cache-Control": "no-cache"},
    )


def openapi_handler(metrics_path: str) -> Handler:
    """The document for the policy in force: a reload may add or move routes."""
    cache = DocumentCache(metrics_path)

    async def openapi(request: web.Request) -> web.StreamResponse:
        body = cache.get(request.app[RUNTIME].current.policy)
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-cache"}
        )

    return openapi


METRICS_PATH = web.AppKey("metrics_path", str)


def setup_ops(app: web.Application, metrics_path: str) -> None:
    app[METRICS_PATH] = metrics_path
    app.router.add_get(INDEX_PATH, index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(metrics_path, make_aiohttp_handler(app[METRICS].registry))
    cors = aiohttp_cors.setup(app)
    anyone = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        expose_headers=("X-Request-ID",), max_age=3600
    )
    cors.add(app.router.add_get("/openapi.json", openapi_handler(metrics_path)), {"*": anyone})
