"""Where token routes get their secrets: OpenAI itself, or the built-in stub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from ..errors import GatewayError

# What the stub upstream answers to a body, given the fake secret and its expiry.
StubAnswer = Callable[[dict[str, Any], str, int], dict[str, Any]]


class UpstreamCall:
    """What an upstream client is told of the request it serves — its id (sent upstream,
    logged) and route label (metrics) — and what it reports back for the access log: the
    upstream's status, how long it took, and the code of a relayed answer that broke
    after it began (upstream/backend.py). The caller copies them to its record."""

    __slots__ = ("error_code", "ms", "request_id", "route", "status")

    def __init__(self, request_id: str, route: str) -> None:
        self.request_id = request_id
        self.route = route
        self.status: int | None = None
        self.ms: float | None = None
        self.error_code: str | None = None


class TokenUpstream(Protocol):
    """POSTs a JSON body to an OpenAI endpoint path and returns the parsed JSON answer.

    Failures raise a GatewayError subclass already mapped per the SPEC's error table.
    `stub`: the answer of the built-in stub upstream, which OpenAI itself ignores;
    `not_found`: what an upstream 404 means at this endpoint (else `upstream_error`).
    """

    async def create(
        self,
        path: str,
        body: dict[str, Any],
        call: UpstreamCall,
        *,
        beta: str | None = None,
        stub: StubAnswer,
        not_found: type[GatewayError] | None = None,
    ) -> dict[str, Any]: ...


UPSTREAM = web.AppKey("upstream", TokenUpstream)
