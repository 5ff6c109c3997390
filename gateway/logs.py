"""JSON lines on stdout: one object per event, request fields from a fixed allow-list.

Only the fields named in `REQUEST_FIELDS` ever leave a record, so a body, a header value
or a secret cannot reach the log by accident through `extra=`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import quote, quote_plus

from .policy.secrets import is_credential

REQUEST_FIELDS = (
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


class Redactor:
    """Masks the policy's secrets in a finished line, whatever field they ended up in and
    however they were spelled there (any case, percent-encoded, JSON-escaped): the one
    place a key echoed by an upstream, a password in a URL or a header value is stopped.

    Most lines hold none: a lower-cased copy and a substring test per spelling (C speed,
    ~0.5 µs a line) decide, and only a line that holds one goes through the regex (~5 µs).
    Credentials in URLs that are not the policy's (a driver's error naming its DSN, a
    link with `?token=`) are masked too (`mask_urls`): only a line with an `@` after a
    `://`, or a `?` and an `=`, is searched for them.
    """

    __slots__ = ("_lowered", "_pattern")

    def __init__(self) -> None:
        self._pattern: re.Pattern[str] | None = None
        self._lowered: tuple[str, ...] = ()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) < _MIN_SECRET:  # "1" or "on" would mask half the log
                continue
            for form in (secret, quote(secret, safe=""), quote_plus(secret)):
                variants |= {form, json.dumps(form)[1:-1]}
        alternatives = sorted(variants, key=len, reverse=True)
        self._lowered = tuple({v.lower() for v in alternatives})
        self._pattern = (
            re.compile("|".join(map(re.escape, alternatives)), re.IGNORECASE)
            if alternatives
            else None
        )

    def redact(self, line: str) -> str:
        if "@" in line or "=" in line:  # a URL may carry a credential: see mask_urls
            line = mask_urls(line)
        pattern = self._pattern
        if pattern is None:
            return line
        lowered = line.lower()
        for variant in self._lowered:
            if variant in lowered:
                return pattern.sub("***", line)
        return line


_MIN_SECRET = 6
# Any URL in a line, not only the policy's: a driver's error naming its DSN, a link. Its
# userinfo, and the values of query parameters named like credentials (policy/secrets.py).
_USERINFO = re.compile(r"(://)([^\s/?#@\"'\\]*)@")
_PARAM = re.compile(r"([?&;])([^\s=&;?#\"'\\]+)=([^\s&;#\"'\\]+)")


def _userinfo(match: re.Match[str]) -> str:
    name, colon, _ = match[2].partition(":")
    return match[1] + (f"{name}:***" if colon else "***") + "@"


def _param(match: re.Match[str]) -> str:
    if not is_credential(match[2]):
        return match[0]
    return f"{match[1]}{match[2]}=***"


def mask_urls(line: str) -> str:
    """Every credential of every URL in `line` masked, as `check` masks the policy's."""
    if "://" in line and "@" in line:
        line = _USERINFO.sub(_userinfo, line)
    if "?" in line and "=" in line:  # a query (a credential's is one)
        line = _PARAM.sub(_param, line)
    return line


# The process's log boundary: `serve` gives it the policy's secrets at start and reload.
REDACTOR = Redactor()


def redact_secrets(secrets: Iterable[str]) -> None:
    REDACTOR.set_secrets(secrets)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": clock.iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in REQUEST_FIELDS:
            value = fields.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            # The exception's type only: a traceback's locals may hold a request's secrets.
            exc_type = record.exc_info[0]
            out["exception"] = exc_type.__name__ if exc_type else "unknown"
        return REDACTOR.redact(ENCODER.encode(out))


# One encoder for every line: json.dumps with options builds a new one per call.
ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


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


clock = _Clock()


class JsonStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler for JSON lines that flushes once per event-loop iteration.

    Under load many requests finish in one iteration of the loop; one write(2) for all
    their lines instead of one each. Nothing waits on a timer: the flush runs as soon as
    the loop has finished what it is doing. Outside a running loop, every line is flushed
    at once, as StreamHandler does.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """One formatted line; the caller holds the handler's lock (as `handle` does)."""
        self.stream.write(line + "\n")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flush_on is not loop:
            self._flush_on = loop
            loop.call_soon(self._flush_batch)

    def _flush_batch(self) -> None:
        self._flush_on = None
        self.flush()


def setup_logging(level: str = "INFO", stream: Any = None) -> None:
    """Route the gateway's and aiohttp's loggers to one JSON handler on stdout."""
    handler = JsonStreamHandler(stream or sys.stdout)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours, without the fields we promise.
    logging.getLogger("aiohttp.access").disabled = True
    # Python warnings (deprecations at runtime) become JSON lines too, not bare stderr text.
    logging.captureWarnings(True)
