"""`chatkit_proxy`: the browser's ChatKit traffic passed to the site's own ChatKit server.

The route's own path is the ChatKit endpoint: every request there is a JSON object whose
`type` picks the limits that apply (`types:`), so the body is read — within the route's
`max_body_bytes` — before any limit is spent, and forwarded as is. Paths below the route
carry attachment uploads (multipart, no type) and are forwarded to the same place below
`target`.

Gateway refusals are always 4xx: the widget retries a stream request on 5xx, five times.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from pydantic import AfterValidator
from pydantic.dataclasses import dataclass

from ..chatkit_protocol import CHATKIT_STREAMING_TYPES
from ..errors import NotFound, RateLimited
from ..http_fields import HOP_BY_HOP
from ..limits.spend import spend_limits
from ..metrics import METRICS, chatkit_type_label
from ..openapi import route_path_item
from ..policy import STRICT, RouteBase, Secret, UpstreamConfig
from ..policy.types import HEADER_NAME, Between, HttpUrl, at
from ..requestinfo import INFO, RequestInfo
from ..runtime import CompiledRoute
from ..upstream.stream import PROXY, relay
from .body import parse_object, read_capped

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


def _upstream_headers(headers: dict[str, Secret]) -> dict[str, Secret]:
    for key in headers:
        if not HEADER_NAME.fullmatch(key):
            raise at((key,), f"bad header name {key!r}")
        if key.lower() in HOP_BY_HOP or key.lower() in ("host", "content-length"):
            raise at((key,), f"{key} is set by the proxy itself")
    return headers


_CONNECT_SECONDS = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyTarget:
    """What a chatkit_proxy route needs per request, worked out once per policy."""

    url: str  # the target, no trailing slash; a request's path below the route is appended
    timeout: aiohttp.ClientTimeout  # no total: streams may last; idle limit between chunks
    headers: tuple[tuple[str, str], ...] = dataclasses.field(repr=False)  # revealed


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ChatKitProxyRoute(RouteBase):
    kind: Literal["chatkit_proxy"]
    target: HttpUrl
    stream_idle_timeout_seconds: Annotated[float, Between(1, 86400)] = 300.0
    max_streams_per_client: Annotated[int, Between(1, 10000)] | None = None
    # Sent to the backend on every request (e.g. a shared key only the gateway knows).
    upstream_headers: Annotated[dict[str, Secret], AfterValidator(_upstream_headers)] = (
        dataclasses.field(default_factory=dict)
    )
    serves_below: ClassVar[bool] = True
    takes_types: ClassVar[bool] = True
    default_max_body_bytes: ClassVar[int | None] = 10 * 1024 * 1024  # attachments

    def compile(self, upstream: UpstreamConfig) -> ProxyTarget:
        idle = self.stream_idle_timeout_seconds
        timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=min(_CONNECT_SECONDS, idle), sock_read=idle
        )
        headers = tuple((name, value.reveal()) for name, value in self.upstream_headers.items())
        return ProxyTarget(self.target.rstrip("/"), timeout, headers)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        info = request[INFO]
        assert info.route is not None
        forward = await read_forward(request, info, info.route)
        await spend_limits(request, info, info.route)
        return await handle_proxy(request, forward)

    def openapi(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        below = self.path.rstrip("/") + "/{rest}"
        return {
            self.path: route_path_item(doc, "chatkit_proxy", self),
            below: route_path_item(doc, "chatkit_proxy_below", self, below=True),
        }


def target_of(compiled: CompiledRoute) -> ProxyTarget:
    assert isinstance(compiled.data, ProxyTarget)
    return compiled.data


@dataclasses.dataclass(frozen=True, slots=True)
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
    route = compiled.route
    assert isinstance(route, ChatKitProxyRoute)
    rel = request.rel_url
    url = upstream_url(route.path, target_of(compiled).url, rel.raw_path, rel.raw_query_string)
    if url is None:
        raise NotFound()
    body = await read_capped(request, route.body_limit)
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
    assert info.route is not None
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
    for name, value in target_of(info.route).headers:
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
    assert compiled is not None
    route = compiled.route
    assert isinstance(route, ChatKitProxyRoute)
    metrics = request.app[METRICS]
    state = request.app[PROXY]
    streaming = info.chatkit_type in CHATKIT_STREAMING_TYPES
    headers = upstream_headers(request, info, streaming)
    timeout = target_of(compiled).timeout
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
