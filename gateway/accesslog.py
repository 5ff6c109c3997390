"""The access log: one INFO line per answer, the busiest log line by far.

It is an ordinary `logging` line — levels, filters and handlers apply. When the only
handler that would see it is the gateway's own `JsonStreamHandler` and no logger or handler
on the way filters (what `serve` sets up), the line is rendered straight from the request
fields into that handler: no LogRecord, no generic formatter. The text is byte for byte
what `JsonFormatter` writes for the same record (tests/test_logs.py compares them on
generated fields). Otherwise — a test's capture handler, an operator's extra handler or
filter — it is `logger.info("request", extra=fields)`, as any other line.

Why leave `logging`'s path at all: docs/DESIGN.md ("The access log") and its measurement
in docs/BENCHMARKS.md. It reads only documented Logger and Handler attributes (`handlers`,
`filters`, `level`, `propagate`, `parent`), walking them as `Logger.callHandlers` does.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from .logs import ENCODER, REDACTOR, REQUEST_FIELDS, JsonStreamHandler, clock

_encode_str = json.encoder.encode_basestring_ascii  # what JSONEncoder uses for str
_KEYS = tuple((name, f',"{name}":') for name in REQUEST_FIELDS)


class AccessLog:
    __slots__ = ("_head", "_logger")

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._head = f',"level":"info","logger":{_encode_str(logger.name)},"message":"request"'

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        handler = self._sole_json_handler()
        if handler is None:
            self._logger.info("request", extra=fields)
            return
        line = REDACTOR.redact(self.line(time.time(), fields))
        handler.acquire()
        try:
            handler.write_line(line)
        finally:
            handler.release()

    def line(self, created: float, fields: dict[str, Any]) -> str:
        """JsonFormatter's text for an access record with these fields, made directly."""
        parts = []
        for name, key in _KEYS:
            value = fields.get(name)
            if value is None:
                continue
            kind = type(value)
            if kind is str:
                parts.append(key + _encode_str(value))
            elif kind is int:
                parts.append(key + int.__repr__(value))
            elif kind is float and math.isfinite(value):
                parts.append(key + float.__repr__(value))
            else:
                parts.append(key + ENCODER.encode(value))
        return f'{{"time":"{clock.iso(created)}"{self._head}{"".join(parts)}}}'

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
