"""The one catch-all handler: the policy's routes live in the Runtime, not in aiohttp's router,
so a reload can add, move or remove routes without rebuilding the application."""

from __future__ import annotations

from aiohttp import web

from ..errors import MethodNotAllowed, NotFound
from ..policy import RouteKind
from ..requestinfo import INFO
from .proxy import handle_proxy
from .token import handle_token


async def dispatch(request: web.Request) -> web.StreamResponse:
    info = request[INFO]
    compiled = info.route
    if compiled is None:
        if request.path in info.runtime.ops_paths:
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        raise NotFound()
    if request.method not in compiled.methods:
        raise MethodNotAllowed(headers={"Allow": compiled.allow_header})
    if compiled.route.kind is RouteKind.CHATKIT_PROXY:
        return await handle_proxy(request)
    return await handle_token(request)
