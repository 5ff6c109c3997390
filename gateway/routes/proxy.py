"""chatkit_proxy routes: the browser's ChatKit traffic passed to the site's own ChatKit server.

The route's own path is the ChatKit endpoint: every request there is a JSON object whose
`type` picks the limits that apply (`types:`), so the body is read — within the route's
`max_body_bytes` — before any limit is spent (routes/dispatch.py), and handed to the
handler to forward as is. Paths below the route carry attachment uploads
(multipart, no type) and are forwarded to the same place below `target`.

Gateway refusals are always 4xx: the widget retries a stream request on 5xx, five times.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from multidict import CIMultiDict

from ..errors import NotFound, RateLimited
from ..metrics import METRICS, chatkit_type_label
from ..policy import CHATKIT_STREAMING_TYPES, HOP_BY_HOP
from ..requestinfo import INFO, RequestInfo
from ..upstream.stream import PROXY, relay
from .body import parse_object, read_capped

if TYPE_CHECKING:
    from ..runtime import CompiledRoute

# Escapes that could turn into a traversal, a different path, or control bytes once a
# backend decodes them: `.`, `/`, `\`, `%` (double encoding), and C0 controls/DEL.
_SUSPECT_ESCAPE = re.compile(r"%(?:2e|2f|5c|25|[01][0-9a-f]|7f)", re.IGNORECASE)
# Set by the gateway from what it knows, never copied from the browser.
_NOT_FORWARDED = HOP_BY_HOP | {
    "host", "content-length", "expect", "forwarded", "x-forwarded-for", "x-forwarded-proto",
    "x-forwarded-host", "x-request-id", "accept-encoding",
}  # fmt: skip
# Open streams end when an answer does (seconds to minutes): a short, honest guess.
_STREAM_RETRY_AFTER = "5"


@dataclass(frozen=True, slots=True)
class Forward:
    """Where a request goes and the body it carries, worked out before limits are spent."""

    url: str
    body: bytes


def upstream_url(route_path: str, target: str, raw_path: str, raw_query: str) -> str | None:
    """`target` + the part of the (still percent-encoded) path below the route, or None
    when that part could step outside the target: dot segments, empty segments, encoded
    dots/slashes/backslashes, double encoding."""
    base = route_path.rstrip("/")
    if raw_path != base and not raw_path.startswith(base + "/"):
        return None  # matched only after decoding: the raw form is not ours to trust
    suffix = raw_path[len(base) :]
    if suffix in ("", "/"):
        url = target
    else:
        parts = suffix[1:].split("/")
        if (
            _SUSPECT_ESCAPE.search(suffix)
            or "\\" in suffix
            or any(p in (".", "..") for p in parts)
            or "" in parts[:-1]
        ):
            return None
        url = target + suffix
    return f"{url}?{raw_query}" if raw_query else url


def is_endpoint(route_path: str, path: str) -> bool:
    return path.rstrip("/") == route_path.rstrip("/")


async def read_forward(request: web.Request, info: RequestInfo, compiled: CompiledRoute) -> Forward:
    """Check the path, read the body within the cap and learn the ChatKit type (before the
    limits); refusals here — 404, 413, 400 — cost no quota and never reach the backend."""
    assert compiled.proxy is not None
    route = compiled.route
    rel = request.rel_url
    url = upstream_url(route.path, compiled.proxy.url, rel.raw_path, rel.raw_query_string)
    if url is None:
        raise NotFound()
    body = await read_capped(request, route.max_body_bytes)
    if is_endpoint(route.path, request.path):
        kind = parse_object(body, empty_ok=False).get("type")
        info.chatkit_type = chatkit_type_label(kind if isinstance(kind, str) else None)
        # Refused before the limits spend anything; the handler's check is the binding one.
        cap = route.max_streams_per_client
        full = request.app[PROXY].streams_full(_stream_key(route.name, info), cap)
        if full and info.chatkit_type in CHATKIT_STREAMING_TYPES:
            raise _too_many_streams(request, route.name)
    return Forward(url, body)


def upstream_headers(request: web.Request, info: RequestInfo, streaming: bool) -> CIMultiDict[str]:
    """The browser's end-to-end headers (Cookie and Authorization included: the backend is
    the site's own and may authenticate with them), the forwarding headers, the policy's."""
    assert info.route is not None and info.route.proxy is not None
    received = request.headers
    named = {t.strip().lower() for v in received.getall("Connection", ()) for t in v.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in received.items():
        lower = name.lower()
        if lower not in _NOT_FORWARDED and lower not in named:
            out.add(name, value)
    # What an untrusted peer claims about earlier hops is dropped, not passed on.
    trusted = info.runtime.resolver.trusts(request.remote)
    peer = request.remote or "unknown"
    prior = ", ".join(received.getall("X-Forwarded-For", ())) if trusted else ""
    out["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    proto = received.get("X-Forwarded-Proto", "").lower() if trusted else ""
    out["X-Forwarded-Proto"] = proto if proto in ("http", "https") else request.scheme
    out["X-Forwarded-Host"] = (trusted and received.get("X-Forwarded-Host")) or request.host
    out["X-Request-ID"] = info.request_id
    # A compressor buffers; event streams are asked for plain. Other answers may come
    # compressed, passed through untouched with their Content-Encoding.
    asked = received.get("Accept-Encoding", "identity")
    out["Accept-Encoding"] = "identity" if streaming else asked
    for name, value in info.route.proxy.headers:
        out[name] = value
    return out


def _stream_key(route_name: str, info: RequestInfo) -> str:
    return f"{route_name}\x00{info.client_ip}"


def _too_many_streams(request: web.Request, route_name: str) -> RateLimited:
    request.app[METRICS].rate_limited.labels(route_name, "streams").inc()
    return RateLimited("Too many open streams", headers={"Retry-After": _STREAM_RETRY_AFTER})


async def handle_proxy(request: web.Request, forward: Forward) -> web.StreamResponse:
    info = request[INFO]
    compiled = info.route
    assert compiled is not None and compiled.proxy is not None
    route = compiled.route
    metrics = request.app[METRICS]
    state = request.app[PROXY]
    streaming = info.chatkit_type in CHATKIT_STREAMING_TYPES
    headers = upstream_headers(request, info, streaming)
    timeout = compiled.proxy.timeout
    if not streaming:
        metrics.chatkit_requests.labels(route.name, chatkit_type_label(info.chatkit_type)).inc()
        return await relay(request, info, forward.url, headers, forward.body, timeout)
    key = _stream_key(route.name, info)
    if not state.take_stream(key, route.max_streams_per_client):
        raise _too_many_streams(request, route.name)
    metrics.chatkit_requests.labels(route.name, chatkit_type_label(info.chatkit_type)).inc()
    open_streams = metrics.open_streams.labels(route.name)
    open_streams.inc()
    try:
        return await relay(request, info, forward.url, headers, forward.body, timeout)
    finally:
        open_streams.dec()
        state.release_stream(key)
