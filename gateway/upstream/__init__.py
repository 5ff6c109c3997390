"""Where token routes get their secrets: OpenAI itself, or the built-in stub."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ..requestinfo import RequestInfo


class TokenUpstream(Protocol):
    """POSTs a JSON body to an OpenAI endpoint path and returns the parsed JSON answer.

    Failures raise a GatewayError subclass already mapped per the SPEC's error table.
    """

    async def create(
        self, path: str, body: dict[str, Any], info: RequestInfo, *, beta: str | None = None
    ) -> dict[str, Any]: ...


UPSTREAM = web.AppKey("upstream", TokenUpstream)
CHATKIT_SESSIONS = "/chatkit/sessions"
REALTIME_CLIENT_SECRETS = "/realtime/client_secrets"
CHATKIT_BETA = "chatkit_beta=v1"
