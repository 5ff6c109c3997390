"""`chatkit_proxy`: the browser's ChatKit traffic passed to the site's own ChatKit server.

The route's own path is the ChatKit endpoint: every request there is a small JSON object
whose `type` picks the limits that apply (`types:`). So, in order, each step cheaper
than the next and none reading more than it must:
1. the path is checked (404) and a declared Content-Length over `max_json_bytes` (or the
   route's `max_body_bytes`, if smaller) refused (413) — nothing read, nothing spent;
2. the limits that need no body (no `types:`) are spent: a client over them is refused
   (429) before one byte of its body is read or parsed;
3. the body is read within `max_json_bytes` (256 KiB by default: far above any message a
   person types, far below what makes parsing cost a pod) and parsed (400; nesting is
   bounded by the interpreter's recursion guard), the type learnt, the per-client stream
   cap checked, and the limits narrowed to that type spent;
4. the body is forwarded as is.
Paths below the route carry attachment uploads (multipart, no type): after the path and
Content-Length checks and the limits, they are streamed to the same place below `target`
as they arrive — never held whole — counted against `max_body_bytes`, at most
`max_uploads_per_client` at a time per client.

Gateway refusals are always 4xx: the widget retries a stream request on 5xx, five times.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from pydantic import AfterValidator, BeforeValidator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import WithJsonSchema

from ..chatkit_protocol import CHATKIT_STREAMING_TYPES
from ..compiled_policy import CompiledRoute
from ..errors import ClientClosed, NotFound, PayloadTooLarge, RequestTimeout
from ..http_fields import HOP_BY_HOP
from ..identity import proxy_user_id, user_secret
from ..limits.enforcement import spend_limits
from ..metrics import METRICS, chatkit_type_label
from ..openapi import route_path_item
from ..policy import (
    STRICT,
    RouteBase,
    Secret,
    UpstreamConfig,
    UserIdConfig,
    UserIdSource,
)
from ..policy.types import HEADER_NAME, Between, HttpUrl, at, strip
from ..request_body import parse_object, read_capped
from ..requestinfo import INFO, RequestInfo
from ..upstream.stream import (
    PROXY,
    stream_key,
    too_many_streams,
    too_many_uploads,
    upload_key,
)
from .proxy_forwarding import forward_headers, relay, upstream_url

_CHUNK = 65536


def _upstream_headers(headers: dict[str, Secret]) -> dict[str, Secret]:
    for key, value in headers.items():
        if not HEADER_NAME.fullmatch(key):
            raise at((key,), f"bad header name {key!r}")
        lower = key.lower()
        if lower in HOP_BY_HOP or lower in ("host", "content-length", "x-chatkit-user"):
            raise at((key,), f"{key} is set by the proxy itself")
        if any(c in value.reveal() for c in "\r\n\0"):
            # aiohttp would refuse it on every request (a 500 each): refuse it here, once.
            raise at((key,), "the value contains a line break or NUL")
    return headers


def _no_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "target must not carry credentials (user:password@): they would show in "
            "logs and errors; send them with upstream_headers (e.g. Authorization) instead"
        )
    return url


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+(?::\d{1,5})?")
_HOST_V6 = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")


def _host(value: str) -> str:
    if not (_HOST.fullmatch(value) or _HOST_V6.fullmatch(value)) or len(value) > 255:
        raise ValueError(f"expected a host name like example.org (or host:port), got {value!r}")
    return value


ForwardedHost = Annotated[
    str,
    BeforeValidator(strip),
    AfterValidator(_host),
    WithJsonSchema({"type": "string", "examples": ["example.org"]}),
]

_CONNECT_SECONDS = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class ProxyTarget:
    """What a chatkit_proxy route needs per request, worked out once per policy."""

    url: str  # the target, no trailing slash; a request's path below the route is appended
    timeout: aiohttp.ClientTimeout  # no total: streams may last; idle limit between chunks
    headers: tuple[tuple[str, str], ...] = dataclasses.field(repr=False)  # revealed
    user_secret: bytes = dataclasses.field(repr=False)  # the key of X-ChatKit-User


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ChatKitProxyRoute(RouteBase):
    kind: Literal["chatkit_proxy"]
    target: Annotated[HttpUrl, AfterValidator(_no_userinfo)]
    stream_idle_timeout_seconds: Annotated[float, Between(1, 86400)] = 300.0
    # A write to the browser that does not complete within this ends the stream (and the
    # backend's request): a client that stops reading does not hold a stream forever.
    stream_write_timeout_seconds: Annotated[float, Between(1, 3600)] = 30.0
    max_streams_per_client: Annotated[int, Between(1, 10000)] | None = None
    # The ChatKit endpoint's own, smaller cap (`json_limit`); max_body_bytes caps it too.
    max_json_bytes: Annotated[int, Between(1024, 16 << 20)] = 256 * 1024
    # Uploads (paths below the route) one client may have in flight at once.
    max_uploads_per_client: Annotated[int, Between(1, 10000)] = 4
    # X-Forwarded-Host sent to the backend (the public host it builds URLs with); unset:
    # not sent. Never the Host a client wrote.
    forwarded_host: ForwardedHost | None = None
    # The end user sent to the backend as X-ChatKit-User (identity.py).
    user_id: UserIdConfig = dataclasses.field(default_factory=UserIdConfig)
    # Sent to the backend on every request (e.g. a shared key only the gateway knows).
    upstream_headers: Annotated[dict[str, Secret], AfterValidator(_upstream_headers)] = (
        dataclasses.field(default_factory=dict)
    )
    serves_below: ClassVar[bool] = True
    takes_types: ClassVar[bool] = True
    default_max_body_bytes: ClassVar[int | None] = 10 * 1024 * 1024  # attachments

    @property
    def json_limit(self) -> int:
        """The endpoint's cap: the smaller of `max_json_bytes` and the route's
        `max_body_bytes` (a route's own cap is never widened by the endpoint's)."""
        return min(self.max_json_bytes, self.body_limit)

    def compile(self, upstream: UpstreamConfig) -> ProxyTarget:
        idle = self.stream_idle_timeout_seconds
        timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=min(_CONNECT_SECONDS, idle), sock_read=idle
        )
        headers = tuple((name, value.reveal()) for name, value in self.upstream_headers.items())
        secret = user_secret(self.user_id, upstream)
        return ProxyTarget(self.target.rstrip("/"), timeout, headers, secret)

    async def serve(self, request: web.Request) -> web.StreamResponse:
        info = request[INFO]
        compiled = info.route
        assert compiled is not None
        rel = request.rel_url
        url = upstream_url(self.path, target_of(compiled).url, rel.raw_path, rel.raw_query_string)
        if url is None:
            raise NotFound()
        if not is_endpoint(self.path, request.path):
            return await handle_upload(request, info, compiled, url)
        declared = request.content_length
        if declared is not None and declared > self.json_limit:
            raise PayloadTooLarge()
        # Limits that need no body first: a client over them costs a dict lookup.
        earlier = await spend_limits(request, info, compiled, typed=False)
        body = await read_capped(request, self.json_limit)
        kind = parse_object(body, empty_ok=False).get("type")
        info.chatkit_type = chatkit_type_label(kind if isinstance(kind, str) else None)
        # Refused before the typed limits spend anything; the handler's check is binding.
        cap = self.max_streams_per_client
        full = request.app[PROXY].streams_full(stream_key(self.name, info.client_ip), cap)
        if full and info.chatkit_type in CHATKIT_STREAMING_TYPES:
            raise too_many_streams(request, self.name)
        await spend_limits(request, info, compiled, typed=True, earlier=earlier)
        return await handle_proxy(request, url, body)

    def openapi(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        below = self.path.rstrip("/") + "/{rest}"
        endpoint = route_path_item(doc, "chatkit_proxy", self)
        post = endpoint["post"]
        post["description"] = post["description"].replace(
            f"Body at most {self.body_limit} bytes.", f"Body at most {self.json_limit} bytes."
        )
        return {
            self.path: endpoint,
            below: route_path_item(doc, "chatkit_proxy_below", self, below=True),
        }

    def warnings(self) -> list[str]:
        if self.user_id.source is UserIdSource.CLIENT_IP:
            return [
                f"route {self.name!r}: user_id.source client_ip gives everyone behind one "
                "address (an office, a mobile carrier's NAT) the same X-ChatKit-User, so "
                "the same thread history"
            ]
        return []


def target_of(compiled: CompiledRoute) -> ProxyTarget:
    assert isinstance(compiled.data, ProxyTarget)
    return compiled.data


def is_endpoint(route_path: str, path: str) -> bool:
    return path.rstrip("/") == route_path.rstrip("/")


def upstream_headers(request: web.Request, info: RequestInfo, streaming: bool) -> CIMultiDict[str]:
    compiled = info.route
    assert compiled is not None
    route = compiled.route
    assert isinstance(route, ChatKitProxyRoute)
    target = target_of(compiled)
    trusted = info.peer_trusted
    user = proxy_user_id(
        route.user_id, target.user_secret, request.headers, info.client_ip, trusted
    )
    by_header = route.user_id.source is UserIdSource.HEADER
    return forward_headers(
        request.headers,
        peer=request.remote,
        scheme=info.scheme,
        trusted=trusted,
        request_id=info.request_id,
        user=user,
        streaming=streaming,
        forwarded_host=route.forwarded_host,
        untrusted_header=route.user_id.header if by_header else None,
        extra=target.headers,
    )


class _Overflow(Exception):
    """The upload went past max_body_bytes mid-stream (aborts the upstream request)."""


class _Upload:
    """The client's body as an async iterator for aiohttp's `data=`: chunks passed on as
    they arrive (the backend sees the first before the client has sent the last), counted
    against the cap; over it, the upstream request is aborted and the client gets 413."""

    __slots__ = ("_content", "_limit", "failure", "sent")

    def __init__(self, request: web.Request, limit: int) -> None:
        self._content = request.content
        self._limit = limit
        self.sent = 0
        self.failure: BaseException | None = None  # what ended the upload early

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await self._content.readany():
                self.sent += len(chunk)
                if self.sent > self._limit:
                    raise _Overflow()
                yield chunk
        except (_Overflow, RequestTimeout, ConnectionError, aiohttp.EofStream) as exc:
            self.failure = exc
            raise

    def refusal(self) -> Exception | None:
        """The answer for an upload that ended early, if that is why the backend call failed."""
        if isinstance(self.failure, _Overflow):
            return PayloadTooLarge()
        if isinstance(self.failure, RequestTimeout):
            return RequestTimeout()
        if self.failure is not None:
            return ClientClosed()
        return None


async def handle_upload(
    request: web.Request, info: RequestInfo, compiled: CompiledRoute, url: str
) -> web.StreamResponse:
    route = compiled.route
    assert isinstance(route, ChatKitProxyRoute)
    declared = request.content_length
    if declared is not None and declared > route.body_limit:
        raise PayloadTooLarge()
    await spend_limits(request, info, compiled, typed=False)
    state = request.app[PROXY]
    key = upload_key(route.name, info.client_ip)
    if not state.take_stream(key, route.max_uploads_per_client):
        raise too_many_uploads(request, route.name)
    try:
        metrics = request.app[METRICS]
        metrics.chatkit_requests.labels(route.name, chatkit_type_label(None)).inc()
        headers = upstream_headers(request, info, streaming=False)
        if declared is not None:
            headers["Content-Length"] = str(declared)  # else chunked, as it came
        upload = _Upload(request, route.body_limit)
        body: bytes | AsyncIterator[bytes] = upload.chunks() if declared != 0 else b""
        timeout = target_of(compiled).timeout
        write_timeout = route.stream_write_timeout_seconds
        return await relay(
            request, info, url, headers, body, timeout, write_timeout, upload.refusal
        )
    finally:
        state.release_stream(key)


async def handle_proxy(request: web.Request, url: str, body: bytes) -> web.StreamResponse:
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
    write_timeout = route.stream_write_timeout_seconds
    if not streaming:
        metrics.chatkit_requests.labels(route.name, chatkit_type_label(info.chatkit_type)).inc()
        return await relay(request, info, url, headers, body, timeout, write_timeout)
    key = stream_key(route.name, info.client_ip)
    if not state.take_stream(key, route.max_streams_per_client):
        raise too_many_streams(request, route.name)
    metrics.chatkit_requests.labels(route.name, chatkit_type_label(info.chatkit_type)).inc()
    open_streams = metrics.open_streams.labels(route.name)
    open_streams.inc()
    try:
        return await relay(request, info, url, headers, body, timeout, write_timeout)
    finally:
        open_streams.dec()
        state.release_stream(key)
