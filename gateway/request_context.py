"""What one request carries through the middlewares: its id, route, client and log fields.
The client is the address its limits count against (clientip.py).

The first middleware takes a snapshot of the current CompiledPolicy (the compiled policy), so a
reload in the middle of a request never changes the rules that request is judged by.
"""

from __future__ import annotations

import os
import re

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from .compiled_policy import ACTIVE_POLICY, CompiledPolicy, CompiledRoute
from .metrics import OPS_ROUTE, UNMATCHED_ROUTE
from .requestinfo import INFO, RequestInfo

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")
# Every answer's `Server` header: the product, never a version (no banner to fingerprint).
SERVER_HEADER = "chatkit-gateway"


class RequestIds:
    """New request ids: 128 random bits as 32 hex digits, like a uuid4. (A counter was
    cheaper by one getrandom() call, about a microsecond, but told anyone who made two
    requests how many others the gateway had answered in between.)"""

    __slots__ = ()

    def __call__(self) -> str:
        return os.urandom(16).hex()


REQUEST_IDS = web.AppKey("request_ids", RequestIds)


def request_id_of(request: web.Request) -> str:
    """The client's X-Request-ID when it is sane (≤128 visible ASCII), else a new one."""
    given = request.headers.get("X-Request-ID")
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    return request.app[REQUEST_IDS]()


def new_request_info(
    request: web.Request, compiled: CompiledPolicy, route: CompiledRoute | None, label: str
) -> RequestInfo:
    """The request's record: its id (also on the answer), policy snapshot, route, client,
    and what a trusted proxy says of the public URL (as uvicorn's proxy_headers and
    aiohttp-remotes decide it: once, here)."""
    rid = request_id_of(request)
    headers = request.headers
    forwarded = headers.getall(hdrs.X_FORWARDED_FOR, ())
    client_ip, trusted = compiled.resolver.at_edge(request.remote, forwarded)
    scheme = request.scheme
    host = headers.get(hdrs.HOST)
    if trusted:
        proto = _first(headers.get(hdrs.X_FORWARDED_PROTO)).lower()
        scheme = proto if proto in ("http", "https") else scheme
        host = _first(headers.get(hdrs.X_FORWARDED_HOST)) or host
    info = RequestInfo(rid, compiled, route, label, client_ip, trusted, scheme, host)
    info.response_headers["X-Request-ID"] = rid
    return info


def _first(value: str | None) -> str:
    """The first of a list-valued forwarding header (the hop nearest the client)."""
    return value.split(",", 1)[0].strip() if value else ""


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    compiled = request.app[ACTIVE_POLICY].current
    route = compiled.match(request.path)
    if route is not None:
        label = route.route.name
    elif request.path in compiled.ops_paths:
        label = OPS_ROUTE
    else:
        label = UNMATCHED_ROUTE
    info = new_request_info(request, compiled, route, label)
    if route is not None and route.route.no_store:
        # Every answer of a token route, errors too: a secret must never sit in a cache,
        # and a 429 or 502 kept by one would refuse clients it never saw.
        info.response_headers.update(_NO_STORE)
    request[INFO] = info
    return await handler(request)


async def add_response_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the headers every answer carries, set once for all answer kinds."""
    headers = response.headers
    headers["Server"] = SERVER_HEADER
    headers["X-Content-Type-Options"] = "nosniff"
    info = request.get(INFO)
    if info is not None:
        headers.update(info.response_headers)
