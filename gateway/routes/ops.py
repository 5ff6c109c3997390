"""Operations endpoints: liveness, readiness, metrics, the OpenAPI document and the index.

No origin checks, no limits. The OpenAPI document may be read from any origin (a docs
viewer on another site, a code generator in a browser): its resource is the one place where
aiohttp-cors applies — a fixed path with a fixed rule, unlike the policy's routes.

Where: on the public port, unless `server.ops_port` is set; then /healthz, /readyz and the
metrics path are served only by `ops_app`, on a listener of its own (`serve`, cli.py) with
its own connection caps, so that no client of the public port can starve a probe or a
scrape; on the public port they are unknown paths (404). The index and the OpenAPI
document stay public. Each endpoint answers its exact path as the client wrote it:
`/%6detrics` is not `/metrics` (aiohttp's router would decode it), and no endpoint sends
`100 Continue` (none reads a body; dispatch.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp_cors
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client.aiohttp import make_aiohttp_handler

from ..compiled_policy import ACTIVE_POLICY, INDEX_PATH
from ..errors import NotFound, error_middleware
from ..instrumentation import instrumentation_middleware
from ..limits.enforcement import LIMITER
from ..metrics import METRICS, OPS_ROUTE, UNMATCHED_ROUTE
from ..openapi import DocumentCache
from ..policy import OnBackendError
from ..readiness import READINESS, not_ready
from ..request_context import REQUEST_IDS, add_response_headers, new_request_info
from ..requestinfo import INFO
from .dispatch import SERVED_OPS_PATHS, defer_continue, dispatch, target_path


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
    policy = app[ACTIVE_POLICY].current.policy
    status = await not_ready(app, policy)  # the subsystems' own checks (the thread stores)
    if status is not None:
        return web.json_response({"status": status}, status=503)
    if not await app[LIMITER].storage.ping():
        if policy.limiter.on_backend_error is OnBackendError.DENY:
            return web.json_response({"status": "limiter backend down"}, status=503)
        return web.json_response({"status": "ok", "limiter": "degraded (local limits)"})
    return web.json_response({"status": "ok"})


async def index(request: web.Request) -> web.StreamResponse:
    """`/`: what answers here and where to read on, for whoever opens the printed link."""
    compiled = request.app[ACTIVE_POLICY].current
    if INDEX_PATH not in compiled.ops_paths:  # a policy route owns `/`
        return await dispatch(request)
    policy = compiled.policy
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
            **({"ops_port": ops_port} if (ops_port := policy.server.ops_port) is not None else {}),
            "docs": "README.md of chatkit-gateway; under `make run` the demo pages are at "
            "http://localhost:8000/",
        },
        headers={"Cache-Control": "no-cache"},
    )


def openapi_handler(metrics_path: str) -> Handler:
    """The document for the policy in force: a reload may add or move routes."""
    cache = DocumentCache(metrics_path)

    async def openapi(request: web.Request) -> web.StreamResponse:
        body = cache.get(request.app[ACTIVE_POLICY].current.policy)
        return web.Response(
            body=body, content_type="application/json", headers={"Cache-Control": "no-cache"}
        )

    return openapi


METRICS_PATH = web.AppKey("metrics_path", str)


def _exact(path: str, handler: Handler) -> Handler:
    """The handler, for `path` exactly as written: not for a percent-encoded spelling."""

    async def exact(request: web.Request) -> web.StreamResponse:
        if target_path(request) != path:
            raise NotFound()
        return await handler(request)

    return exact


def _add_get(app: web.Application, path: str, handler: Handler) -> web.AbstractRoute:
    return app.router.add_get(path, _exact(path, handler), expect_handler=defer_continue)


def _add_probes_and_metrics(app: web.Application, metrics_path: str) -> frozenset[str]:
    _add_get(app, "/healthz", healthz)
    _add_get(app, "/readyz", readyz)
    _add_get(app, metrics_path, make_aiohttp_handler(app[METRICS].registry))
    return frozenset({"/healthz", "/readyz", metrics_path})


def setup_ops(app: web.Application, metrics_path: str, *, ops_port: int | None = None) -> None:
    """The operations endpoints of the public port: all of them, or with `ops_port` only
    the index and the OpenAPI document (the rest is `ops_app`'s)."""
    app[METRICS_PATH] = metrics_path
    served = {INDEX_PATH, "/openapi.json"}
    _add_get(app, INDEX_PATH, index)
    if ops_port is None:
        served |= _add_probes_and_metrics(app, metrics_path)
    app[SERVED_OPS_PATHS] = frozenset(served)
    cors = aiohttp_cors.setup(app)
    anyone = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        expose_headers=("X-Request-ID",), max_age=3600
    )
    openapi = _add_get(app, "/openapi.json", openapi_handler(metrics_path))
    cors.add(openapi, {"*": anyone})


@web.middleware
async def ops_context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """request_context.py's middleware, for a listener that serves no policy route: the
    request's id, compiled snapshot and client, under the route label `ops` (`unmatched`
    for any other path, whatever route of the public port it names)."""
    compiled = request.app[ACTIVE_POLICY].current
    served = target_path(request) in request.app[SERVED_OPS_PATHS]
    label = OPS_ROUTE if served else UNMATCHED_ROUTE
    request[INFO] = new_request_info(request, compiled, None, label)
    return await handler(request)


def ops_app(main: web.Application) -> web.Application:
    """The application of the `server.ops_port` listener: /healthz, /readyz and metrics
    of the gateway `main` (its policy, lifecycle, limiter and registry), 404 for anything
    else. The middlewares are the main app's but the first, which would match the
    policy's routes."""
    middlewares = [ops_context_middleware, instrumentation_middleware, error_middleware]
    app = web.Application(middlewares=middlewares)
    app[METRICS] = main[METRICS]
    app[ACTIVE_POLICY] = main[ACTIVE_POLICY]  # the holder: reloads reach both
    app[REQUEST_IDS] = main[REQUEST_IDS]
    app[LIFECYCLE] = main[LIFECYCLE]  # draining: /readyz answers 503
    app[LIMITER] = main[LIMITER]  # readiness asks its backend
    app[READINESS] = main[READINESS]  # the same list: the thread stores', added at main's start
    app[METRICS_PATH] = main[METRICS_PATH]
    app[SERVED_OPS_PATHS] = _add_probes_and_metrics(app, main[METRICS_PATH])
    app.on_response_prepare.append(add_response_headers)
    # Every other path and method: 404, or 405 on the paths above (dispatch, no route).
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch, expect_handler=defer_continue)
    return app
