"""The backend side of chatkit_proxy routes: one pooled session, and relaying answers as they come.

Chunks are copied as the socket yields them, never buffered or compressed, so each
Server-Sent Event leaves as it arrives. A write toward the browser that stalls past
`stream_write_timeout_seconds`, or a client that leaves (`handler_cancellation`), ends
the backend's request too. A backend failing mid-stream, after the 200 went out: ChatKit's
own `stream.error` event between two events, else a cut connection, never half an event
(README, "Or: a ChatKit server of your own").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..errors import UpstreamError, UpstreamTimeout
from ..http_fields import HOP_BY_HOP
from ..metrics import METRICS
from . import UpstreamCall

log = logging.getLogger("gateway.proxy")

# The backend's own CORS, framing and identity headers never reach the browser: the
# gateway sets those itself.
_NOT_RELAYED = HOP_BY_HOP | {"content-length", "date", "server", "x-request-id"}
_ERROR_EVENT = b'data: {"type":"error","code":"stream.error","allow_retry":true}\n\n'


# The app's session toward chatkit_proxy backends.
PROXY_SESSION = web.AppKey("proxy_session", aiohttp.ClientSession)


async def proxy_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: a session of its own (no total timeout, no pool cap, no cookie jar —
    a shared jar would hand one user's cookies to the next)."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,  # bytes pass through exactly, Content-Encoding with them
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        trust_env=False,
    ) as session:
        app[PROXY_SESSION] = session
        yield


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth_failed"
    if status == 404:
        return "not_found"
    return "client_error" if status < 500 else "server_error"


async def relay(
    request: web.Request,
    call: UpstreamCall,
    url: str,
    headers: CIMultiDict[str],
    body: bytes | AsyncIterator[bytes],
    limits: aiohttp.ClientTimeout,
    write_timeout: float,
    refusal: Callable[[], Exception | None] = lambda: None,
) -> web.StreamResponse:
    """POST to the backend and copy its answer to the client as it arrives. `body` may be
    an iterator (an upload streamed as it comes); when the backend call fails because the
    body ended early, `refusal()` says how to answer instead (413, 408, 499). The backend's
    status and time, and the code of a stream that broke, are reported on `call`."""
    metrics = request.app[METRICS]
    route = call.route
    started = time.perf_counter()
    outcome = "ok"
    upstream: aiohttp.ClientResponse | None = None
    try:
        try:
            upstream = await request.app[PROXY_SESSION].post(
                URL(url, encoded=True),
                data=body,
                headers=headers,
                timeout=limits,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        except TimeoutError:
            outcome = "timeout"
            _warn("upstream timeout", call, f"no answer within {limits.sock_read:g}s")
            raise UpstreamTimeout() from None
        except aiohttp.ClientError as exc:
            refused = refusal()
            if refused is not None:
                outcome = "client_error"
                raise refused from None
            outcome = "connection_error"
            _warn("upstream connection failed", call, type(exc).__name__)
            raise UpstreamError() from None
        first = time.perf_counter() - started
        metrics.upstream_first_byte.labels(route).observe(first)
        call.status = upstream.status
        call.ms = round(first * 1000, 1)
        outcome = outcome_of(upstream.status)
        if upstream.status >= 500:
            # Its body may be a debug page; the status stays 5xx so the widget retries.
            _warn("upstream server error", call, f"status={upstream.status}")
            raise UpstreamError()
        response = _start(upstream)
        await response.prepare(request)
        outcome = await _pump(request, call, upstream, response, write_timeout)
        return response
    finally:
        if upstream is not None:
            upstream.close()  # a no-op for a finished answer; else the backend sees us go
        elapsed = time.perf_counter() - started
        metrics.upstream_call(route, outcome, elapsed)


def end_to_end(received: CIMultiDictProxy[str], dropped: Callable[[str], bool]) -> CIMultiDict[str]:
    """The fields of `received` that its Connection field does not name and that `dropped`
    (told the lowercase name) keeps: what passes between browser and backend, either way."""
    named = {t.strip().lower() for v in received.getall("Connection", ()) for t in v.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in received.items():
        lower = name.lower()
        if lower not in named and not dropped(lower):
            out.add(name, value)
    return out


def _start(upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = end_to_end(
        upstream.headers, lambda name: name in _NOT_RELAYED or name.startswith("access-control-")
    )
    sse = upstream.content_type == "text/event-stream"
    if sse:
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"  # nginx and friends in front: do not buffer
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
    if upstream.content_length is not None and not sse:
        response.content_length = upstream.content_length
    return response


async def _pump(
    request: web.Request,
    call: UpstreamCall,
    upstream: aiohttp.ClientResponse,
    response: web.StreamResponse,
    write_timeout: float,
) -> str:
    """Copy chunks until the backend ends; returns the upstream outcome."""
    sse = upstream.content_type == "text/event-stream"
    tail = b"\n\n"  # the last bytes written: do they end an event?
    sent = 0
    while True:
        try:
            chunk = await upstream.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            timed_out = isinstance(exc, TimeoutError)
            boundary = tail.endswith((b"\n\n", b"\r\r", b"\r\n\r\n"))
            call.error_code = UpstreamTimeout.code if timed_out else UpstreamError.code
            _warn(
                "upstream stream broke",
                call,
                f"{type(exc).__name__} after {sent} bytes, "
                + ("at an event boundary" if boundary else "inside an event or body"),
            )
            if sse and boundary:
                with contextlib.suppress(ConnectionError):
                    await response.write(_ERROR_EVENT)
            else:
                _drop_connection(request)
            return "timeout" if timed_out else "connection_error"
        if not chunk:
            return "ok"
        try:
            async with asyncio.timeout(write_timeout):
                await response.write(chunk)  # waits only when the socket is full
        except ConnectionError:
            return "ok"  # the client left; finishing the response notices it too
        except TimeoutError:
            call.error_code = "client_write_timeout"
            _warn("client stopped reading", call, f"a write stalled {write_timeout:g}s")
            _drop_connection(request)
            return "ok"  # the backend did nothing wrong; closing it ends its request
        sent += len(chunk)
        tail = chunk if len(chunk) >= 4 else (tail + chunk)[-4:]


def _drop_connection(request: web.Request) -> None:
    """End the answer without its last chunk: the browser sees an incomplete response."""
    transport = request.transport
    if transport is not None:
        transport.close()


def _warn(message: str, call: UpstreamCall, detail: str) -> None:
    log.warning(
        message, extra={"request_id": call.request_id, "route": call.route, "detail": detail}
    )
