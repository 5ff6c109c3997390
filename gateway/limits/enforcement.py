"""Spends a request's rate-limit buckets before its handler runs, and reports them.

Answers carry the IETF httpapi draft fields for the tightest limit:
`RateLimit-Policy: "name";q=<quota>;w=<window>` and `RateLimit: "name";r=<left>;t=<reset>`.
"""

from __future__ import annotations

from aiohttp import web

from ..errors import RateLimited
from ..metrics import METRICS
from ..policy import whole_seconds
from ..requestinfo import RequestInfo
from . import Limiter, tightest
from .base import Verdict

LIMITER = web.AppKey("limiter", Limiter)


def rate_headers(verdict: Verdict) -> dict[str, str]:
    limit = verdict.limit
    reset = whole_seconds(verdict.reset_seconds)
    return {
        "RateLimit-Policy": limit.policy_header,
        "RateLimit": f'"{limit.name}";r={verdict.remaining};t={reset}',
    }


async def spend_limits(
    request: web.Request,
    info: RequestInfo,
    *,
    typed: bool | None = None,
    earlier: Verdict | None = None,
) -> Verdict | None:
    """Spends the buckets of the request's route (429 when one is exhausted) and puts the
    tightest limit's RateLimit fields on the answer to come. `typed`: only the limits narrowed to
    ChatKit types (True) or only the others (False), for a route that spends the second
    kind before it has read the type; `earlier` is what that first call returned, so the
    fields report the tightest of both."""
    compiled = info.route
    assert compiled is not None  # a policy route's request (dispatch.py)
    limits = compiled.limits
    if typed is not None:
        limits = tuple(lim for lim in limits if (lim.limit.types is not None) is typed)
    if not limits:
        return earlier
    client = info.compiled.client_key(info.client_ip)
    buckets = Limiter.buckets(limits, client, info.origin, info.chatkit_type)
    if not buckets:
        return earlier
    limiter = request.app[LIMITER]
    verdicts = limiter.acquire_now(buckets) or await limiter.acquire(buckets)
    report = tightest([*verdicts, earlier] if earlier is not None else verdicts)
    assert report is not None
    info.response_headers.update(rate_headers(report))
    if not report.allowed:
        request.app[METRICS].rate_limited.labels(compiled.name, report.limit.key.value).inc()
        raise RateLimited(headers={"Retry-After": str(whole_seconds(report.retry_after))})
    return report
