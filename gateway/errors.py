"""One exception family for every refusal, rendered as JSON at one boundary.

Handlers and middlewares raise a GatewayError subclass; `error_middleware` turns it (and
aiohttp's own HTTP exceptions, and anything unexpected) into `{"error": {code, message}}`.
Headers that must reach the client even on errors (CORS, RateLimit, Retry-After) ride on
the exception, added by the step that knows them.

The access log and the error line (instrumentation.py, around this middleware) read the
`ErrorResponse`: nothing here touches the request's state, so it imports nothing of the gateway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    message = "Internal error"

    def __init__(self, message: str | None = None, *, headers: Mapping[str, str] | None = None):
        super().__init__(message or self.message)
        self.text = message or self.message
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(GatewayError):
    status, code, message = 400, "bad_request", "Request body must be a JSON object"


class OriginNotAllowed(GatewayError):
    status, code, message = 403, "origin_not_allowed", "Origin not allowed"


class NotFound(GatewayError):
    status, code, message = 404, "not_found", "Not found"


class MethodNotAllowed(GatewayError):
    status, code, message = 405, "method_not_allowed", "Method not allowed"


class RequestTimeout(GatewayError, TimeoutError):
    """The client did not send its body in time (http_protocol.py sets this on the body
    stream). Also a TimeoutError, so that aiohttp's lingering read of an unread body after
    the answer stops quietly on it instead of logging an unhandled exception."""

    status, code, message = 408, "request_timeout", "Request body not received in time"


class ClientClosed(GatewayError):
    """The client went away before its request was read: nobody receives this answer, but
    the access log and metrics say 499 (nginx's code) instead of a 500 and an error line."""

    status, code, message = 499, "client_closed", "Client closed the connection"


class PayloadTooLarge(GatewayError):
    status, code, message = 413, "payload_too_large", "Request body too large"


class UnsupportedMediaType(GatewayError):
    """A body, or an attachment, of a type the route does not take."""

    status, code, message = 415, "unsupported_media_type", "Unsupported media type"


class UnsupportedEncoding(UnsupportedMediaType):
    """A compressed request body: aiohttp would inflate it (past every size cap, and
    against its Content-Length), and no browser sends one."""

    message = "Request bodies must not be encoded"


class RateLimited(GatewayError):
    status, code, message = 429, "rate_limited", "Rate limit exceeded"


class UpstreamRateLimited(GatewayError):
    status, code, message = 429, "upstream_rate_limited", "Upstream rate limit exceeded"


class UpstreamAuthFailed(GatewayError):
    status, code, message = 502, "upstream_auth_failed", "Invalid API key configuration"


class WorkflowNotFound(GatewayError):
    status, code, message = 502, "workflow_not_found", "Workflow not found"


class UpstreamError(GatewayError):
    status, code, message = 502, "upstream_error", "Upstream request failed"


class Unavailable(GatewayError):
    status, code, message = 503, "unavailable", "Service unavailable"


class UpstreamTimeout(GatewayError):
    status, code, message = 504, "upstream_timeout", "Upstream did not answer in time"


# aiohttp's refusals that have a code of their own (403: aiohttp-cors refusing a preflight).
_BY_STATUS = {
    cls.status: cls
    for cls in (BadRequest, OriginNotAllowed, NotFound, MethodNotAllowed, PayloadTooLarge)
}


class ErrorResponse(web.Response):
    """`{"error": {code, message}}` with the error's status and headers; `code` is the
    access log's `error_code`, `unhandled` the unexpected exception behind a 500, if any."""

    def __init__(self, err: GatewayError, unhandled: BaseException | None = None) -> None:
        body = json.dumps({"error": {"code": err.code, "message": err.text}})
        super().__init__(
            status=err.status, text=body, content_type="application/json", headers=err.headers
        )
        self.code = err.code
        self.unhandled = unhandled


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as err:
        return ErrorResponse(err)
    except web.HTTPException as exc:
        # aiohttp's own refusals (a malformed request, a body over client_max_size).
        if exc.status < 400:
            raise
        cls = _BY_STATUS.get(exc.status)
        mapped = cls() if cls else GatewayError(exc.reason)
        if cls is None:
            mapped.status, mapped.code = exc.status, "http_error"
        return ErrorResponse(mapped)
    except Exception as exc:
        transport = request.transport
        if isinstance(exc, ConnectionError) and (transport is None or transport.is_closing()):
            return ErrorResponse(ClientClosed())  # e.g. the body stopped: peer gone
        return ErrorResponse(GatewayError(), unhandled=exc)  # logged by instrumentation.py
