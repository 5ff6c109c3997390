"""The one catch-all handler: the policy's routes live in the CompiledPolicy, not in
aiohttp's router, so a reload can add, move or remove routes without rebuilding the app.

A policy route's checks run here as plain calls, in this order, each in its own module;
a refusal raises (errors.py renders it) and nothing after it runs:

1. origin.py — a foreign or missing Origin is 403 before anything is spent; a preflight
   is answered here.
2. the method — 405 with `Allow`.
3. `100 Continue`, to a client that asked for it (`Expect: 100-continue`) before sending
   its body: only now, once the request has passed the checks that need no body, and not
   when its Content-Length is already over the route's cap. (aiohttp would send it before
   any handler runs, inviting the body of a request about to be refused; `defer_continue`
   is the catch-all's expect_handler that stops it.)
4. the route's handler (what its kind's `compile()` made of it), which spends the limits
   (limits/enforcement.py: 429, and the RateLimit fields on every answer) as soon as it
   knows what they need: a ChatKit endpoint spends the limits without `types:` before
   reading the body (a client over its limit costs no read), then reads the ChatKit type
   within `max_json_bytes` and spends the typed ones (chatkit_endpoint.py).

(Plain calls, not middlewares: they concern only policy routes, and a middleware level
costs every request, ops routes included; docs/DESIGN.md, "Shape of the code".)

Paths that are no policy route's: 405 for an operations endpoint this listener serves
(routes/ops.py, `SERVED_OPS_PATHS`), else 404 — judged on the path as the client wrote it,
so `/%68ealthz` is not `/healthz`.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from ..errors import MethodNotAllowed, NotFound, UnsupportedEncoding
from ..origin import check_origin
from ..requestinfo import INFO

# The operations endpoints the app's router serves (set by routes/ops.py): with
# `server.ops_port` the probes and metrics are on a listener of their own, not here.
SERVED_OPS_PATHS = web.AppKey("served_ops_paths", frozenset[str])


def target_path(request: web.Request) -> str:
    """The request's path as the client wrote it, not percent-decoded (aiohttp's router
    and `request.path` decode it; yarl normalises even `raw_path`)."""
    target = request.raw_path.partition("?")[0].partition("#")[0]
    if not target.startswith("/"):  # absolute-form: scheme://authority/path
        target = "/" + target.partition("://")[2].partition("/")[2]
    return target


async def defer_continue(request: web.Request) -> None:
    """An expect_handler that sends nothing: `send_continue` does, once the checks pass."""
    return None


async def send_continue(request: web.Request, body_limit: int | None = None) -> None:
    """`100 Continue`, if the client waits for it before sending a body we will read."""
    expect = request.headers.get(hdrs.EXPECT)
    if expect is None:  # nearly every request
        return
    if (
        expect.lower() == "100-continue"
        and request.version == HttpVersion11  # never to an HTTP/1.0 client (RFC 9110 §10.1.1)
        and request.can_read_body
        and (body_limit is None or (request.content_length or 0) <= body_limit)
    ):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer itself has not started (as aiohttp does)


async def dispatch(request: web.Request) -> web.StreamResponse:
    info = request[INFO]
    compiled = info.route
    if compiled is None:
        if target_path(request) in request.app[SERVED_OPS_PATHS]:
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        raise NotFound()
    if not (compiled.may_skip_origin and compiled.route.origin_exempt(request)):
        preflight = check_origin(request, info, compiled)
        if preflight is not None:
            return preflight
    if request.method not in compiled.methods:
        raise MethodNotAllowed(headers={"Allow": compiled.allow_header})
    encoding = request.headers.get(hdrs.CONTENT_ENCODING)
    if encoding is not None and encoding.strip().lower() != "identity":
        raise UnsupportedEncoding()
    if hdrs.EXPECT in request.headers:  # nearly never: no coroutine for the rest
        await send_continue(request, compiled.route.body_limit)
    return await compiled.handler.serve(request, info)
