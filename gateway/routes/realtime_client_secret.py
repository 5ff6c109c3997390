"""`realtime_client_secret`: a Realtime client secret for a voice widget, minted with the
server's key and the session the policy configures."""

from __future__ import annotations

from dataclasses import field
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic.dataclasses import dataclass

from ..policy import STRICT, JsonObject
from ..policy.types import Between
from ..requestinfo import RequestInfo
from .token import TokenMint, TokenRoute, expires_after


@dataclass(frozen=True, kw_only=True, config=STRICT)
class RealtimeOptions:
    expires_after_seconds: Annotated[int, Between(10, 7200)] | None = None
    session: JsonObject | None = None


@dataclass(frozen=True, kw_only=True, config=STRICT)
class RealtimeClientSecretRoute(TokenRoute):
    kind: Literal["realtime_client_secret"]
    realtime: RealtimeOptions = field(default_factory=RealtimeOptions)
    endpoint = "/realtime/client_secrets"

    def upstream_body(
        self, browser: dict[str, Any], request: web.Request, info: RequestInfo, mint: TokenMint
    ) -> dict[str, Any]:
        opts = self.realtime
        body: dict[str, Any] = {}
        if opts.expires_after_seconds:
            body["expires_after"] = expires_after(opts.expires_after_seconds)
        if opts.session:
            body["session"] = opts.session
        return body

    def answer(self, upstream: dict[str, Any]) -> tuple[object, object]:
        return upstream.get("value"), upstream.get("expires_at")

    @staticmethod
    def stub_answer(body: dict[str, Any], secret: str, expires_at: int) -> dict[str, Any]:
        return {"value": secret, "expires_at": expires_at, "session": body.get("session", {})}
