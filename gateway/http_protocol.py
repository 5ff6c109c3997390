"""One connection's protocol: aiohttp's request handler, with deadlines and JSON errors.

Once a request has begun, aiohttp waits for the rest as long as the client likes (a header
line every few seconds, a body one byte at a time), and answers malformed HTTP in
text/plain naming its version. `GuardedRequestHandler` adds the `server:` keys' head and
body deadlines and answers as JSON; the rules: docs/DESIGN.md, "Slow and greedy clients".
The limits in force when a connection opens apply to it. The books across connections
are the listener's (listener.py), known here only as a `Guard`: listener → http_protocol.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol, cast

from aiohttp import StreamReader, hdrs, web, web_protocol
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web import BaseRequest, RequestHandler

from .errors import RequestTimeout
from .policy import ServerConfig
from .request_context import SERVER_HEADER

log = logging.getLogger("gateway.server")

# Every private aiohttp name GuardedRequestHandler uses: attributes of RequestHandler (and
# its BaseProtocol), and `_ErrInfo` of aiohttp.web_protocol; what each is for: DESIGN.md,
# "aiohttp internals". Checked when a listener starts: with one missing, it serves with
# aiohttp's own handler, and says so. (`_buffer_paused` is read with getattr, not needed.)
AIOHTTP_PRIVATE: tuple[str, ...] = (
    "_request_count", "_messages", "_close", "_force_close", "_reading_paused", "_loop",
    "_ErrInfo",
)  # fmt: skip


def missing_internals() -> tuple[str, ...]:
    """The names of AIOHTTP_PRIVATE this aiohttp lacks; empty when the guard can run."""
    return tuple(
        name
        for name in AIOHTTP_PRIVATE
        if not hasattr(RequestHandler, name) and not hasattr(web_protocol, name)
    )


_VERSIONS = (HttpVersion10, HttpVersion11)
_TE_IN_HTTP10 = BadHttpMessage("Transfer-Encoding in an HTTP/1.0 request")
_UNKNOWN_MINOR = BadHttpMessage("HTTP/1.x other than 1.0 and 1.1")
# The refusals' messages by the guard's reason (listener.py).
_BUSY = {
    "": "Too many connections; try again shortly",
    "refused_per_client": "Too many connections from this address; try again shortly",
}


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The TCP peer's address, which `server.max_connections_per_client` counts by."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class Guard(Protocol):
    """What a connection's handler needs from the listener (listener.ConnectionGuard)."""

    server: web.Server  # aiohttp's, which a RequestHandler reports to
    new_id: Callable[[], str]  # request ids for the answers written here

    def admit(self, conn: GuardedRequestHandler, peer: str, config: ServerConfig) -> str | None:
        """None: admitted; else the reason it was refused."""

    def release(self, conn: GuardedRequestHandler) -> None: ...
    def set_idle(self, conn: GuardedRequestHandler, idle: bool) -> None: ...
    def count(self, reason: str) -> None: ...


def _json_error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _common_headers(request_id: str) -> dict[str, str]:
    return {
        "Server": SERVER_HEADER,
        "X-Content-Type-Options": "nosniff",
        "X-Request-ID": request_id,
    }


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with the head and body deadlines (module doc)."""

    __slots__ = (
        "_admitted", "_answered", "_body", "_body_deadline", "_body_timer", "_config",
        "_guard", "_head_bytes", "_head_count", "_head_timer",
    )  # fmt: skip

    def __init__(self, guard: Guard, config: ServerConfig) -> None:
        super().__init__(
            guard.server,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=config.keepalive_timeout_seconds,
            max_line_size=config.max_header_bytes,
            max_field_size=config.max_header_bytes,
            access_log=None,  # type: ignore[arg-type]  # the gateway writes its own
        )
        self._guard = guard
        self._config = config
        self._admitted = False
        self._answered = 0  # requests of this connection answered (vs. _request_count)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_count = 0
        self._head_bytes = False
        self._body: StreamReader | None = None
        self._body_deadline = 0.0
        self._body_timer: asyncio.TimerHandle | None = None

    # --- connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        refused = self._guard.admit(self, peer_address(transport), self._config)
        if refused is not None:
            self._write_answer(transport, 503, "unavailable", _BUSY.get(refused, _BUSY[""]))
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head()
        self._cancel_body()
        self._guard.release(self)
        if self._admitted:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._close or self._force_close:
            super().data_received(data)  # ignored by aiohttp too: the connection is ending
            return
        count = self._request_count
        in_body = self._body is not None  # a body was still due: these bytes are its
        super().data_received(data)
        if self._request_count != count:
            self._vet_heads(self._request_count - count)
            self._head_done()
        elif in_body:
            self._body_received(len(data))
        elif data:
            # The first bytes of a next head (on a kept-alive connection, or pipelined).
            if self._head_timer is None:
                self._arm_head()
            self._head_bytes = True

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered += 1
            if self._answered >= self._request_count:
                self._guard.set_idle(self, True)

    # --- request heads ----------------------------------------------------------------

    def _arm_head(self) -> None:
        self._head_count = self._request_count
        self._head_bytes = False
        self._head_timer = self._loop.call_later(
            self._config.header_timeout_seconds, self._head_expired
        )

    def _cancel_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_done(self) -> None:
        """One or more heads completed; the newest one's body (if any) is now due."""
        self._cancel_head()
        self._cancel_body()
        self._guard.set_idle(self, False)
        payload = self._messages[-1][1] if self._messages else None
        if isinstance(payload, StreamReader) and not payload.is_eof():
            self._body = payload
            self._body_deadline = self._loop.time() + self._config.body_timeout_seconds
            self._body_timer = self._loop.call_at(self._body_deadline, self._body_check)

    def _vet_heads(self, new: int) -> None:
        """Refuse what aiohttp's parser lets through but the gateway must not serve (the
        HTTP versions and framing in DESIGN.md): the newly parsed heads, the last `new` in
        the queue, become errors that handle_error answers in their turn."""
        queue = self._messages
        err_info = web_protocol._ErrInfo
        for i in range(max(0, len(queue) - new), len(queue)):
            message = queue[i][0]
            if isinstance(message, err_info):
                continue
            if message.version.major != 1:
                version = f"HTTP/{message.version.major}.{message.version.minor}"
                error = err_info(505, HttpProcessingError(code=505, message=version), version)
            elif message.version not in _VERSIONS:  # aiohttp's pure-Python parser only
                error = err_info(400, _UNKNOWN_MINOR, str(_UNKNOWN_MINOR))
            elif message.version == HttpVersion10 and hdrs.TRANSFER_ENCODING in message.headers:
                error = err_info(400, _TE_IN_HTTP10, str(_TE_IN_HTTP10))
            else:
                continue
            queue[i] = (error, EMPTY_PAYLOAD)

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._request_count != self._head_count:
            return
        self._guard.count("header_timeout")
        if self._answered < self._request_count:
            # A pipelined head stalls behind a request in progress: finish that, then close.
            self.close()
            return
        if self._head_bytes and self.transport is not None:
            peer = peer_address(self.transport) or None
            log.info("request head not received in time", extra={"status": 408, "client_ip": peer})
            late = "Request head not received in time"
            self._write_answer(self.transport, 408, "request_timeout", late)
        self.force_close()

    def _write_answer(
        self, transport: asyncio.BaseTransport, status: int, code: str, message: str
    ) -> None:
        """A whole `Connection: close` answer, for a connection with no request object (yet)."""
        body = _json_error(code, message)
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
            f"Date: {email.utils.formatdate(usegmt=True)}",
            *(f"{name}: {value}" for name, value in _common_headers(self._guard.new_id()).items()),
            "Connection: close",
        ]
        # uvloop's transport is not an asyncio.Transport
        cast(asyncio.Transport, transport).write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    # --- request bodies ---------------------------------------------------------------

    def _cancel_body(self) -> None:
        self._body = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_received(self, size: int) -> None:
        if self._body is None or self._body.is_eof():
            self._cancel_body()
            return
        cfg = self._config
        earned = self._body_deadline + size / cfg.body_min_rate_bytes_per_second
        self._body_deadline = min(earned, self._loop.time() + cfg.body_timeout_seconds)

    def _body_check(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or body.is_eof():
            self._body = None
            return
        now = self._loop.time()
        if self._reading_paused or getattr(self, "_buffer_paused", False):
            # We stopped reading (the handler is behind): not the client's time.
            self._body_deadline = now + self._config.body_timeout_seconds
        if now < self._body_deadline:
            self._body_timer = self._loop.call_at(self._body_deadline, self._body_check)
            return
        self._body = None
        self._guard.count("body_timeout")
        # The handler's read raises it (→ 408 JSON); no further request on this connection.
        body.set_exception(RequestTimeout())
        self.close()

    # --- aiohttp's own answers --------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Protocol errors (and anything that escaped the app) as JSON, never text/plain."""
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already started; cannot send an error")
        if status == 505:
            self._guard.count("malformed_request")
            log.info(
                "HTTP version not supported",
                extra={"status": status, "client_ip": request.remote},
            )
            code, text = "http_version_not_supported", "HTTP version not supported; use HTTP/1.1"
        elif status >= 500:
            self.log_exception("error handling request", exc_info=exc)
            code, text = "internal_error", "Internal error"
        else:
            self._guard.count("malformed_request")
            log.info(
                "malformed request",
                extra={
                    "status": status,
                    "client_ip": request.remote,
                    "detail": type(exc).__name__ if exc is not None else None,
                },
            )
            code, text = "bad_request", "Malformed HTTP request"
        resp = web.Response(
            status=status,
            body=_json_error(code, text),
            content_type="application/json",
            headers=_common_headers(self._guard.new_id()),
        )
        resp.force_close()
        return resp
