"""Origin checks and CORS, answered by the gateway itself.

A browser enforces CORS only on reading the answer; the request has already reached us.
So a foreign or missing Origin is refused here with 403 before any limit is spent or any
upstream is called, and preflights from foreign origins get no Access-Control-* at all.
Allowed origins get their CORS headers on every answer (errors and streams included)
through `RequestInfo.response_headers`, which the prepare hook applies.

aiohttp-cors binds its options to router resources at start-up; our routes come from a
policy that reloads, and our refusals must be JSON, so the rules live here instead.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import OriginNotAllowed
from .metrics import METRICS
from .requestinfo import INFO
from .runtime import EXPOSE_HEADERS


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    info = request[INFO]
    compiled = info.route
    if compiled is None:
        return await handler(request)
    route = compiled.route
    origin = request.headers.get("Origin")
    info.origin = origin[:256] if origin else None
    info.response_headers["Vary"] = "Origin"
    if origin is None:
        allowed = route.allow_missing_origin and request.method != "OPTIONS"
    else:
        allowed = origin in route.allowed_origins
    if not allowed:
        request.app[METRICS].origin_rejected.labels(compiled.name).inc()
        raise OriginNotAllowed()
    if origin is not None:
        info.response_headers["Access-Control-Allow-Origin"] = origin
        info.response_headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=compiled.preflight_headers)
    return await handler(request)
