"""The access log: one INFO line per answer, the busiest log line by far.

It is an ordinary `logging` line — levels, filters and handlers apply. When the only
handler that would see it is the gateway's own `JsonStreamHandler` and no logger or handler
on the way filters (what `serve` sets up), the line is rendered straight from the request
fields into that handler (typed, `AccessFields`: one f-string, no per-field dispatch): no
LogRecord, no generic formatter. The text is byte for byte what `JsonFormatter` writes for
the same record (tests/test_logs.py compares them on generated fields). Otherwise — a
test's capture handler, an operator's extra handler or filter — it is
`logger.info("request", extra=fields)`, as any other line.

Why leave `logging`'s path at all: docs/DESIGN.md ("The access log") and its measurement
in docs/BENCHMARKS.md. It reads only documented Logger and Handler attributes (`handlers`,
`filters`, `level`, `propagate`, `parent`), walking them as `Logger.callHandlers` does.
"""

from __future__ import annotations

import json
import logging
import time
from typing import NamedTuple

from .logs import REDACTOR, REQUEST_FIELDS, JsonStreamHandler, clock

_encode_str = json.encoder.encode_basestring_ascii  # what JSONEncoder uses for str


class AccessFields(NamedTuple):
    """One answer's fields, in `REQUEST_FIELDS` order; the times are finite floats."""

    request_id: str
    route: str
    method: str
    path: str
    status: int
    duration_ms: float
    client_ip: str
    origin: str | None = None
    chatkit_type: str | None = None
    upstream_status: int | None = None
    upstream_ms: float | None = None
    error_code: str | None = None


if AccessFields._fields != REQUEST_FIELDS[: len(AccessFields._fields)]:
    raise ImportError("AccessFields must be the first of logs.REQUEST_FIELDS, in their order")


class AccessLog:
    __slots__ = ("_head", "_logger")

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._head = f',"level":"info","logger":{_encode_str(logger.name)},"message":"request"'

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: AccessFields) -> None:
        handler = self._sole_json_handler()
        if handler is None:
            self._logger.info("request", extra=fields._asdict())
            return
        line = REDACTOR.redact(self.line(time.time(), fields))
        handler.acquire()
        try:
            handler.write_line(line)
        finally:
            handler.release()

    def line(self, created: float, f: AccessFields) -> str:
        """JsonFormatter's text for an access record with these fields, made directly."""
        text = (
            f'{{"time":"{clock.iso(created)}"{self._head},"request_id":{_encode_str(f.request_id)}'
            f',"route":{_encode_str(f.route)},"method":{_encode_str(f.method)}'
            f',"path":{_encode_str(f.path)},"status":{f.status},"duration_ms":{f.duration_ms!r}'
            f',"client_ip":{_encode_str(f.client_ip)}'
        )
        if f.origin is not None:
            text += ',"origin":' + _encode_str(f.origin)
        if f.chatkit_type is not None:
            text += ',"chatkit_type":' + _encode_str(f.chatkit_type)
        if f.upstream_status is not None:
            text += f',"upstream_status":{f.upstream_status}'
        if f.upstream_ms is not None:
            text += f',"upstream_ms":{f.upstream_ms!r}'
        if f.error_code is not None:
            text += ',"error_code":' + _encode_str(f.error_code)
        return text + "}"

    def _sole_json_handler(self) -> JsonStreamHandler | None:
        """The one handler the record would reach, if it is ours and nothing filters;
        the same walk up the logger tree as `Logger.callHandlers`."""
        found: JsonStreamHandler | None = None
        logger: logging.Logger | None = self._logger
        while logger is not None:
            if logger.filters:
                return None
            for handler in logger.handlers:
                if found is not None or type(handler) is not JsonStreamHandler:
                    return None
                if handler.filters or handler.level > logging.INFO:
                    return None
                found = handler
            logger = logger.parent if logger.propagate else None
        return found
