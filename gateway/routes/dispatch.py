"""The one catch-all handler: the policy's routes live in the Runtime, not in aiohttp's router,
so a reload can add, move or remove routes without rebuilding the application.

A policy route's checks run here as plain calls, in this order, each in its own module;
a refusal raises (errors.py renders it) and nothing after it runs:

1. origin.py — a foreign or missing Origin is 403 before anything is spent; a preflight
   is answered here.
2. the method — 405 with `Allow`.
3. the route's kind (`RouteBase.serve`), which spends the limits (limits/spend.py: 429,
   and the RateLimit fields on every answer) when it has learnt what they need: a proxy
   route first reads the ChatKit type, so refusals (404, 413, 400) spend no quota.

(They were middlewares once; in aiohttp each middleware level costs about a microsecond
and a half on every request, ops routes included, and these only concern policy routes.)
"""

from __future__ import annotations

from aiohttp import web

from ..errors import MethodNotAllowed, NotFound
from ..origin import check_origin
from ..requestinfo import INFO


async def dispatch(request: web.Request) -> web.StreamResponse:
    info = request[INFO]
    compiled = info.route
    if compiled is None:
        if request.path in info.runtime.ops_paths:
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        raise NotFound()
    preflight = check_origin(request, info, compiled)
    if preflight is not None:
        return preflight
    if request.method not in compiled.methods:
        raise MethodNotAllowed(headers={"Allow": compiled.allow_header})
    return await compiled.route.serve(request)
