"""Where token routes get their secrets: OpenAI itself, or the built-in stub."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from ..errors import GatewayError
from ..requestinfo import RequestInfo

# What the stub upstream answers to a body, given the fake secret and its expiry.
StubAnswer = Callable[[dict[str, Any], str, int], dict[str, Any]]


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
        info: RequestInfo,
        *,
        beta: str | None = None,
        stub: StubAnswer,
        not_found: type[GatewayError] | None = None,
    ) -> dict[str, Any]: ...


UPSTREAM = web.AppKey("upstream", TokenUpstream)
