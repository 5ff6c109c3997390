"""A built-in fake OpenAI for offline widget work (`--stub-upstream`), never implicit.

Its secrets are marked `ek_stub_` so nobody mistakes them for real ones; the widget
cannot use them against OpenAI, but a page can exercise mount, refresh and limits. What it
answers at each endpoint is the route kind's (`TokenRoute.stub_answer`).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..errors import GatewayError
from ..metrics import Metrics
from . import StubAnswer, UpstreamCall


class StubUpstream:
    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def create(
        self,
        path: str,
        body: dict[str, Any],
        call: UpstreamCall,
        *,
        beta: str | None = None,
        stub: StubAnswer,
        not_found: type[GatewayError] | None = None,
    ) -> dict[str, Any]:
        self._metrics.upstream_call(call.route, "ok", None)
        call.status = 200
        call.ms = 0.0
        lifetime = int((body.get("expires_after") or {}).get("seconds", 600))
        secret = "ek_stub_" + secrets.token_urlsafe(24)
        return stub(body, secret, int(time.time()) + lifetime)
