"""The OpenAI client for token routes: one pooled session, retries, outbound smoothing.

Retries cover what is safe to retry — connection failures and 5xx — with full-jitter
exponential backoff. A timeout is not retried (the caller is already waiting), nor is a
429 (its Retry-After is passed on to the browser instead). Upstream bodies never reach
the client or the log verbatim: only OpenAI's error `type`/`code`, key-like text masked.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .. import __version__
from ..errors import (
    GatewayError,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from ..metrics import Metrics
from ..policy import UpstreamConfig
from . import StubAnswer, UpstreamCall
from .outbound import OutboundRate

log = logging.getLogger("gateway.upstream")
_KEYLIKE = re.compile(r"(sk|ek|rk)-[A-Za-z0-9_\-*]{4,}|ek_[A-Za-z0-9_\-]{4,}")
_BACKOFF_BASE = 0.1
_BACKOFF_CAP = 2.0


class _Retry(Exception):
    def __init__(self, final: GatewayError) -> None:
        self.final = final


class OpenAIClient:
    __slots__ = (
        "_config", "_headers", "_metrics", "_outbound", "_random", "_session", "_sleep", "_timeout"
    )  # fmt: skip

    def __init__(
        self,
        session: aiohttp.ClientSession,
        config: UpstreamConfig,
        metrics: Metrics,
        outbound: OutboundRate,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._session = session
        self._metrics = metrics
        self._sleep = sleep
        self._random = rng
        self._outbound = outbound  # upstream.max_rate: the app's, the agents' calls wait on it too
        self._apply(config)

    def configure(self, config: UpstreamConfig) -> None:
        """Take a reloaded upstream section."""
        self._apply(config)

    def _apply(self, config: UpstreamConfig) -> None:
        """What every call reuses, built once per policy rather than per request."""
        self._config = config
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_seconds)
        self._headers = {
            "Authorization": f"Bearer {config.api_key.reveal()}",
            "Accept": "application/json",
            "User-Agent": f"chatkit-gateway/{__version__}",
        }

    async def create(
        self,
        path: str,
        body: dict[str, Any],
        call: UpstreamCall,
        *,
        beta: str | None = None,
        stub: StubAnswer | None = None,
        not_found: type[GatewayError] | None = None,
    ) -> dict[str, Any]:
        config = self._config
        headers = {
            **self._headers,
            "X-Request-ID": call.request_id,
            "X-Client-Request-Id": call.request_id,
        }
        if beta:
            headers["OpenAI-Beta"] = beta
        url = config.base_url + path
        for attempt in range(config.retries + 1):
            try:
                return await self._attempt(url, path, headers, body, call, not_found)
            except _Retry as retry:
                if attempt == config.retries:
                    raise retry.final from None
                delay = self._random() * min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)
                await self._sleep(delay)
        raise AssertionError("unreachable")

    async def _attempt(
        self,
        url: str,
        path: str,
        headers: dict[str, str],
        body: dict[str, Any],
        call: UpstreamCall,
        not_found: type[GatewayError] | None,
    ) -> dict[str, Any]:
        timeout = self._timeout
        started = time.perf_counter()
        outcome = "ok"
        try:
            await self._outbound.wait()
            async with self._session.post(url, json=body, headers=headers, timeout=timeout) as r:
                call.status = r.status
                if r.status == 200:
                    try:
                        data = await r.json(content_type=None)
                    except (ValueError, aiohttp.ContentTypeError):
                        data = None
                    if not isinstance(data, dict):
                        outcome = "server_error"
                        raise UpstreamError()
                    return data
                outcome, error = await self._classify(r, call, not_found)
                raise error
        except TimeoutError:
            outcome = "timeout"
            log.warning("upstream timeout", extra=_fields(call, f"{path} after {timeout.total}s"))
            raise UpstreamTimeout() from None
        except aiohttp.ClientError as exc:
            outcome = "connection_error"
            log.warning("upstream connection failed", extra=_fields(call, type(exc).__name__))
            raise _Retry(UpstreamError()) from None
        except UpstreamError as exc:
            if outcome == "server_error":
                raise _Retry(exc) from None
            raise
        finally:
            elapsed = time.perf_counter() - started
            call.ms = int(elapsed * 10_000 + 0.5) / 10
            self._metrics.upstream_call(call.route, outcome, elapsed)

    async def _classify(
        self, r: aiohttp.ClientResponse, call: UpstreamCall, not_found: type[GatewayError] | None
    ) -> tuple[str, GatewayError]:
        fields = _fields(call, await _error_detail(r))
        if r.status == 429:
            retry_after = _retry_after(r.headers.get("Retry-After"))
            log.warning("upstream rate limited", extra=fields)
            return "rate_limited", UpstreamRateLimited(headers={"Retry-After": str(retry_after)})
        if r.status in (401, 403):
            log.error("OpenAI rejected the API key", extra=fields)
            return "auth_failed", UpstreamAuthFailed()
        if r.status == 404 and not_found is not None:
            log.error(not_found.message.lower(), extra=fields)
            return "not_found", not_found()
        if r.status >= 500:
            log.warning("upstream server error", extra=fields)
            return "server_error", UpstreamError()
        log.error("upstream refused the request", extra=fields)
        return "client_error", UpstreamError()


def _retry_after(raw: str | None) -> int:
    try:
        return min(3600, max(1, int(float(raw or "1") + 0.999)))
    except ValueError:
        return 1


async def _error_detail(r: aiohttp.ClientResponse) -> str:
    """OpenAI's error type, code and message for the log, key-like text masked."""
    try:
        data = await r.json(content_type=None)
        err = data.get("error") if isinstance(data, dict) else None
    except (ValueError, aiohttp.ClientError):
        err = None
    request_id = r.headers.get("x-request-id", "-")
    if not isinstance(err, dict):
        return f"status={r.status} openai_request_id={request_id}"
    message = _KEYLIKE.sub("***", str(err.get("message", "")))[:300]
    return (
        f"status={r.status} type={err.get('type')} code={err.get('code')} "
        f"openai_request_id={request_id} message={message}"
    )


def _fields(call: UpstreamCall, detail: str) -> dict[str, Any]:
    return {"request_id": call.request_id, "route": call.route, "detail": detail}
