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

from .compiled_policy import EXPOSE_HEADERS, CompiledRoute
from .errors import OriginNotAllowed
from .metrics import METRICS
from .requestinfo import RequestInfo


def check_origin(
    request: web.Request, info: RequestInfo, compiled: CompiledRoute
) -> web.Response | None:
    """Refuses a foreign or missing Origin (403); answers a preflight (the response);
    else None, with the CORS headers for the answer to come put on `info`."""
    route = compiled.route
    origin = request.headers.get("Origin")
    info.origin = origin[:256] if origin else None
    headers = info.response_headers
    headers["Vary"] = "Origin"
    if origin is None:
        allowed = route.allow_missing_origin and request.method != "OPTIONS"
    else:
        allowed = origin in route.allowed_origins
    if not allowed:
        request.app[METRICS].origin_rejected.labels(compiled.name).inc()
        raise OriginNotAllowed()
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=compiled.preflight_headers)
    return None
