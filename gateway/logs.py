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
            "time": _iso(record.created),
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
        return json.dumps(out, separators=(",", ":"), default=str)


def _iso(created: float) -> str:
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


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
