"""A built-in fake OpenAI for offline widget work (`--stub-upstream`), never implicit.

Its secrets are marked `ek_stub_` so nobody mistakes them for real ones; the widget
cannot use them against OpenAI, but a page can exercise mount, refresh and limits.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from ..metrics import Metrics
from ..requestinfo import RequestInfo
from . import CHATKIT_SESSIONS


class StubUpstream:
    __slots__ = ("_metrics",)

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def create(
        self, path: str, body: dict[str, Any], info: RequestInfo, *, beta: str | None = None
    ) -> dict[str, Any]:
        self._metrics.upstream_requests.inc((info.route_label, "ok"))
        info.upstream_status = 200
        info.upstream_ms = 0.0
        lifetime = int((body.get("expires_after") or {}).get("seconds", 600))
        secret = "ek_stub_" + secrets.token_urlsafe(24)
        expires_at = int(time.time()) + lifetime
        if path == CHATKIT_SESSIONS:
            return {
                "id": "cksess_stub_" + secrets.token_hex(8),
                "object": "chatkit.session",
                "client_secret": secret,
                "expires_at": expires_at,
                "status": "active",
                "user": body.get("user"),
                "workflow": body.get("workflow"),
            }
        return {"value": secret, "expires_at": expires_at, "session": body.get("session", {})}
