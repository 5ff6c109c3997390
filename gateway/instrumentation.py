"""Metrics and the access log for every answer, measured around everything inside.

The access log is a `logging` INFO line on `gateway.access` (accesslog.py: rendered straight
into the gateway's JSON handler when nothing else would see it). Error answers come from
error_middleware (errors.py), inside this one, as `ErrorResponse`s that name their code:
the access log's `error_code`, and the "unhandled error" line for an unexpected exception,
are written here, where the request's id and fields are at hand.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from .accesslog import AccessFields, AccessLog
from .errors import ErrorResponse
from .metrics import METRICS
from .requestinfo import INFO, RequestInfo

log = logging.getLogger("gateway")
access_log = AccessLog(logging.getLogger("gateway.access"))
_CLIENT_CLOSED = 499  # nginx's code for a client that went away before the answer


@web.middleware
async def instrumentation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS].per_request
    info = request[INFO]
    metrics.in_flight += 1
    started = time.perf_counter()
    status = 500
    # An answer already under way (a stream) that broke records its code on the info.
    error_code: str | None = None
    try:
        response = await handler(request)
        status = response.status
        if isinstance(response, ErrorResponse):
            error_code = response.code
            if response.unhandled is not None:
                log.error(
                    "unhandled error",
                    exc_info=response.unhandled,
                    extra={"request_id": info.request_id},
                )
        return response
    except asyncio.CancelledError:
        status = _CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.in_flight -= 1
        metrics.answered(info.route_label, status, elapsed)
        if access_log.enabled():
            _log_access(request, info, status, elapsed, error_code or info.error_code)


def _log_access(
    request: web.Request, info: RequestInfo, status: int, elapsed: float, error_code: str | None
) -> None:
    access_log.write(
        AccessFields(
            info.request_id,
            info.route_label,
            request.method,
            request.path[:256],
            status,
            int(elapsed * 100_000 + 0.5) / 100,  # round(…, 2), without its cost
            info.client_ip,
            info.origin,
            info.chatkit_type,
            info.upstream_status,
            info.upstream_ms,
            error_code,
        )
    )
