"""Metrics and the access log for every answer, measured around everything inside."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from .accesslog import AccessLog
from .metrics import METRICS
from .requestinfo import INFO, RequestInfo

access_log = AccessLog(logging.getLogger("gateway.access"))
_CLIENT_CLOSED = 499  # nginx's code for a client that went away before the answer


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    info = request[INFO]
    metrics.in_flight.inc()
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = _CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.in_flight.dec()
        metrics.answered(info.route_label, status, elapsed)
        if access_log.enabled():
            _log_access(request, info, status, elapsed)


def _log_access(request: web.Request, info: RequestInfo, status: int, elapsed: float) -> None:
    access_log.write(
        {
            "request_id": info.request_id,
            "route": info.route_label,
            "method": request.method,
            "path": request.path[:256],
            "status": status,
            "duration_ms": int(elapsed * 100_000 + 0.5) / 100,  # round(…, 2), without its cost
            "client_ip": info.client_ip,
            "origin": info.origin,
            "chatkit_type": info.chatkit_type,
            "upstream_status": info.upstream_status,
            "upstream_ms": info.upstream_ms,
            "error_code": info.error_code,
        }
    )
