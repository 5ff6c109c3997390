"""What token routes share: mint a secret upstream with the server's key, answer
`{client_secret, expires_at}`. A token kind says which endpoint, with which body, and
what the stub upstream answers there.

The browser's body may carry only a `device_id` (see identity.py); workflow, model and
key come from the policy alone.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from aiohttp import web
from pydantic.dataclasses import dataclass

from ..errors import GatewayError, UpstreamError
from ..limits.enforcement import spend_limits
from ..openapi import route_path_item
from ..policy import STRICT, RouteBase, UpstreamConfig
from ..request_body import parse_object, read_capped
from ..requestinfo import RequestInfo
from ..upstream import UPSTREAM, UpstreamCall


def expires_after(seconds: int) -> dict[str, Any]:
    """The `expires_after` both token endpoints take (SPEC §1)."""
    return {"anchor": "created_at", "seconds": seconds}


@dataclass(frozen=True, kw_only=True, config=STRICT)
class TokenRoute(RouteBase):
    needs_openai_key: ClassVar[bool] = True
    no_store: ClassVar[bool] = True  # a secret must never sit in a cache, nor a refusal
    endpoint: ClassVar[str]  # below upstream.base_url
    beta: ClassVar[str | None] = None  # the OpenAI-Beta header, if the endpoint needs one
    not_found: ClassVar[type[GatewayError] | None] = None  # what a 404 there means

    @abc.abstractmethod
    def upstream_body(
        self, browser: dict[str, Any], request: web.Request, info: RequestInfo, mint: TokenMint
    ) -> dict[str, Any]:
        """What is POSTed to `endpoint` for this browser request."""

    @abc.abstractmethod
    def answer(self, upstream: dict[str, Any]) -> tuple[object, object]:
        """The client secret and its expiry in the upstream's answer."""

    @staticmethod
    @abc.abstractmethod
    def stub_answer(body: dict[str, Any], secret: str, expires_at: int) -> dict[str, Any]:
        """What the built-in stub upstream (`--stub-upstream`) answers to `body`."""

    def compile(self, upstream: UpstreamConfig) -> TokenMint:
        return TokenMint(self)

    def openapi(self, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {self.path: route_path_item(doc, self.KIND, self, rate_headers=True)}


class TokenMint:
    """A token route's handler: spend the limits, read the browser's body, mint upstream."""

    __slots__ = ("route", "user_secret")

    def __init__(self, route: TokenRoute, user_secret: bytes = b"") -> None:
        self.route = route
        self.user_secret = user_secret  # the key of the end user's id, if the kind sends one

    async def serve(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        route = self.route
        await spend_limits(request, info)
        browser = parse_object(await read_capped(request, route.body_limit))
        call = UpstreamCall(info.request_id, info.route_label)
        try:
            data = await request.app[UPSTREAM].create(
                route.endpoint,
                route.upstream_body(browser, request, info, self),
                call,
                beta=route.beta,
                stub=route.stub_answer,
                not_found=route.not_found,
            )
        finally:  # what the upstream reports, for the access log
            info.upstream_status, info.upstream_ms = call.status, call.ms
        secret, expires_at = route.answer(data)
        if not isinstance(secret, str) or not secret or not isinstance(expires_at, int):
            raise UpstreamError("Upstream answered without a client secret")
        return web.json_response({"client_secret": secret, "expires_at": expires_at})
