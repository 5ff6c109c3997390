"""The per-request record every middleware and check reads and fills in (a leaf module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .compiled_policy import CompiledPolicy, CompiledRoute


@dataclass(slots=True)
class RequestInfo:
    request_id: str
    compiled: CompiledPolicy  # the policy in force when the request began
    route: CompiledRoute | None
    route_label: str
    client_ip: str  # the address limits count against (clientip.py)
    # Decided once, at the edge (request_context.py), read plainly by everything after:
    peer_trusted: bool  # the TCP peer is one of `server.trusted_proxies`
    scheme: str  # the public scheme: a trusted proxy's X-Forwarded-Proto, else the connection's
    host: str | None  # the public host: a trusted proxy's X-Forwarded-Host, else Host
    origin: str | None = None
    chatkit_type: str | None = None
    upstream_status: int | None = None
    upstream_ms: float | None = None
    # An answer already begun that broke (a proxied stream, upstream/backend.py): the code
    # for the access log. Error answers carry theirs on the response (errors.py).
    error_code: str | None = None
    # Added to the answer when it is prepared, streamed answers and errors included.
    response_headers: dict[str, str] = field(default_factory=dict)


INFO = web.RequestKey("chatkit_gateway_info", RequestInfo)
