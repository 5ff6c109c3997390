"""JSON lines on stdout: one object per event, request fields from a fixed allow-list.

Only the fields named in `_REQUEST_FIELDS` ever leave a record, so a body, a header value
or a secret cannot reach the log by accident through `extra=`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_REQUEST_FIELDS = (
    "request_id",
    "route",
    "method",
    "path",
    "status",
    "duration_ms",
    "client_ip",
    "origin",
    "chatkit_type",
    "upstream_status",
    "upstream_ms",
    "error_code",
    "event",
    "detail",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in _REQUEST_FIELDS:
            value = fields.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            # The exception's type only: a traceback's locals may hold a request's secrets.
            exc_type = record.exc_info[0]
            out["exception"] = exc_type.__name__ if exc_type else "unknown"
        return _ENCODER.encode(out)


# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


class _Clock:
    """ISO 8601 UTC times; strftime runs once per second, not once per line."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        # The epsilon undoes float error (…40.999 is stored as …40.99899…), capped at 999.
        millis = min(999, int((created - second) * 1000 + 1e-4))
        return f"{self._prefix}.{millis:03d}Z"


_clock = _Clock()


class AccessLog:
    """One INFO line per answer on `logger`, through its filters and handlers as usual,
    without what `Logger.info` does on each call that an access line never uses: the
    caller's frame, thread and process names (copied here from one record made at start).
    """

    __slots__ = ("_logger", "_template")

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._template = logging.LogRecord(
            logger.name, logging.INFO, "", 0, "request", (), None
        ).__dict__

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        record = logging.LogRecord.__new__(logging.LogRecord)
        attrs = record.__dict__
        attrs.update(self._template)
        attrs.update(fields)
        now = time.time()
        attrs["created"] = now
        attrs["msecs"] = (now - int(now)) * 1000
        attrs["relativeCreated"] = (
            self._template["relativeCreated"] + (now - self._template["created"]) * 1000
        )
        self._logger.handle(record)


def setup_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route the gateway's and aiohttp's loggers to one JSON handler on stdout."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours, without the fields we promise.
    logging.getLogger("aiohttp.access").disabled = True
    # Python warnings (deprecations at runtime) become JSON lines too, not bare stderr text.
    logging.captureWarnings(True)
