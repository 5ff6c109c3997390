"""`chatkit_proxy`: the browser's ChatKit traffic passed to the site's own ChatKit server.

The route's own path is the ChatKit endpoint: the path is checked (404), then the
endpoint's checks run (gateway/chatkit_endpoint.py: size, untyped limits, parse, type,
stream cap, typed limits) and the body is forwarded as is.
Paths below the route carry attachment uploads (multipart, no type): after the path and
Content-Length checks and the limits, they are streamed to the same place below `target`
as they arrive — never held whole — counted against `max_body_bytes`, at most
`max_uploads_per_client` at a time per client.

Gateway refusals are always 4xx: the widget retries a stream request on 5xx, five times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, ClassVar, Literal

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from pydantic import AfterValidator
from pydantic.dataclasses import dataclass
from pydantic.json_schema import WithJsonSchema

from ..chatkit_endpoint import admit_call, read_call
from ..concurrency import SLOTS, STREAMS, UPLOADS
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
from ..policy.types import HEADER_NAME, Between, HttpUrl, Stripped, at
from ..requestinfo import RequestInfo
from ..upstream import UpstreamCall, backend
from .proxy_forwarding import forward_headers, upstream_url

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


_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?)+(?::\d{1,5})?")
_HOST_V6 = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")


def _host(value: str) -> str:
    if not (_HOST.fullmatch(value) or _HOST_V6.fullmatch(value)) or len(value) > 255:
        raise ValueError(f"expected a host name like example.org (or host:port), got {value!r}")
    return value


ForwardedHost = Annotated[
    Stripped, AfterValidator(_host), WithJsonSchema({"type": "string", "examples": ["example.org"]})
]

_CONNECT_SECONDS = 10.0


@dataclass(frozen=True, kw_only=True, config=STRICT)
class ChatKitProxyRoute(RouteBase):
    kind: Literal["chatkit_proxy"]
    target: HttpUrl  # no user:password@ (HttpUrl): give credentials in upstream_headers
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

    def compile(self, upstream: UpstreamConfig) -> ProxyHandler:
        return ProxyHandler(self, upstream)

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


class ProxyHandler:
    """A chatkit_proxy route's handler, with what it needs worked out once per policy."""

    __slots__ = ("headers", "route", "timeout", "url", "user_secret")

    def __init__(self, route: ChatKitProxyRoute, upstream: UpstreamConfig) -> None:
        idle = route.stream_idle_timeout_seconds
        self.route = route
        # The target, no trailing slash; a request's path below the route is appended.
        self.url = route.target.rstrip("/")
        # No total: streams may last; an idle limit between chunks.
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=min(_CONNECT_SECONDS, idle), sock_read=idle
        )
        self.headers = tuple((name, v.reveal()) for name, v in route.upstream_headers.items())
        self.user_secret = user_secret(route.user_id, upstream)  # the key of X-ChatKit-User

    def __repr__(self) -> str:  # the revealed headers and the key stay out of it
        return f"ProxyHandler({self.route.name!r}, {self.url!r})"

    async def serve(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        route = self.route
        rel = request.rel_url
        url = upstream_url(route.path, self.url, rel.raw_path, rel.raw_query_string)
        if url is None:
            raise NotFound()
        if request.path.rstrip("/") != route.path.rstrip("/"):  # below the endpoint: uploads
            return await self._upload(request, info, url)
        call = await read_call(request, info, route.json_limit)
        await admit_call(request, info, call, route.max_streams_per_client)
        return await self._proxy(request, info, url, call.body, call.streaming)

    def _headers(
        self, request: web.Request, info: RequestInfo, streaming: bool
    ) -> CIMultiDict[str]:
        route = self.route
        trusted = info.peer_trusted
        user = proxy_user_id(
            route.user_id, self.user_secret, request.headers, info.client_ip, trusted
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
            extra=self.headers,
        )

    async def _upload(
        self, request: web.Request, info: RequestInfo, url: str
    ) -> web.StreamResponse:
        route = self.route
        declared = request.content_length
        if declared is not None and declared > route.body_limit:
            raise PayloadTooLarge()
        await spend_limits(request, info, typed=False)
        slot = request.app[SLOTS].hold(
            UPLOADS, route.name, info.client_ip, route.max_uploads_per_client
        )
        async with slot:
            metrics = request.app[METRICS]
            metrics.chatkit_requests.labels(route.name, chatkit_type_label(None)).inc()
            headers = self._headers(request, info, streaming=False)
            if declared is not None:
                headers["Content-Length"] = str(declared)  # else chunked, as it came
            upload = _Upload(request, route.body_limit)
            body: bytes | AsyncIterator[bytes] = upload.chunks() if declared != 0 else b""
            return await self._relay(request, info, url, headers, body, upload.refusal)

    async def _proxy(
        self, request: web.Request, info: RequestInfo, url: str, body: bytes, streaming: bool
    ) -> web.StreamResponse:
        route = self.route
        requests = request.app[METRICS].chatkit_requests
        headers = self._headers(request, info, streaming)
        cap = route.max_streams_per_client
        slot = request.app[SLOTS].hold(STREAMS, route.name, info.client_ip, cap)
        async with slot if streaming else contextlib.nullcontext():
            requests.labels(route.name, chatkit_type_label(info.chatkit_type)).inc()
            return await self._relay(request, info, url, headers, body)

    async def _relay(
        self,
        request: web.Request,
        info: RequestInfo,
        url: str,
        headers: CIMultiDict[str],
        body: bytes | AsyncIterator[bytes],
        refusal: Callable[[], Exception | None] = lambda: None,
    ) -> web.StreamResponse:
        """upstream/backend.py's `relay`, told only the request's id and route; the backend's
        status and time, and the code of a stream that broke, go on the record (access log)."""
        call = UpstreamCall(info.request_id, info.route_label)
        write_timeout = self.route.stream_write_timeout_seconds
        try:
            return await backend.relay(
                request, call, url, headers, body, self.timeout, write_timeout, refusal
            )
        finally:
            info.upstream_status, info.upstream_ms = call.status, call.ms
            if call.error_code is not None:
                info.error_code = call.error_code


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
