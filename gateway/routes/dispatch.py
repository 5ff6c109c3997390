"""The one catch-all handler: the policy's routes live in the Runtime, not in aiohttp's router,
so a reload can add, move or remove routes without rebuilding the application.

A policy route's checks run here as plain calls, in this order, each in its own module;
a refusal raises (errors.py renders it) and nothing after it runs:

1. origin.py — a foreign or missing Origin is 403 before anything is spent; a preflight
   is answered here.
2. the method — 405 with `Allow`.
3. proxy.py (chatkit_proxy only) — path, body within its cap, ChatKit type: so that
   `types:` limits can apply and refusals (404, 413, 400) spend no quota.
4. limits/spend.py — 429, and the RateLimit fields on every answer.

(They were middlewares once; in aiohttp each middleware level costs about a microsecond
and a half on every request, ops routes included, and these only concern policy routes.)
"""

from __future__ import annotations

from aiohttp import web

from ..errors import MethodNotAllowed, NotFound
from ..limits.spend import spend_limits
from ..origin import check_origin
from ..requestinfo import INFO
from .proxy import handle_proxy, read_forward
from .token import handle_token


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
    if compiled.proxy is not None:
        forward = await read_forward(request, info, compiled)
        await spend_limits(request, info, compiled)
        return await handle_proxy(request, forward)
    await spend_limits(request, info, compiled)
    return await handle_token(request)
