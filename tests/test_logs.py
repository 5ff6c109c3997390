"""JSON log lines: the formatter's allow-list, one flush per event-loop iteration, and the
access line as `serve` writes it — a plain `logging` line that levels and filters govern,
with `error_code` exactly on error answers and the "unhandled error" line before it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.accesslog import AccessFields, AccessLog
from gateway.logs import JsonFormatter, JsonStreamHandler
from gateway.upstream import UPSTREAM
from tests.conftest import ALLOWED, LogCapture
from tests.support.chatkit_backend import running_backend

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

FIELDS: dict[str, Any] = {
    "request_id": "r1",
    "route": "site",
    "status": 200,
    "duration_ms": 1.5,
    "client_ip": "192.0.2.1",
    "origin": None,
}
ACCESS = AccessFields(**FIELDS, method="POST", path="/api/chatkit/session")


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


@pytest.fixture
def own_logger() -> Iterator[tuple[logging.Logger, CountingStream]]:
    """A logger whose only handler is the gateway's, as `serve` sets it up on the root
    (outside logging's tree: pytest attaches its capture handlers to loggers there)."""
    logger = logging.Logger("gateway.access", logging.INFO)
    stream = CountingStream()
    logger.addHandler(JsonStreamHandler(stream))
    yield logger, stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_the_formatter_prints_allow_listed_fields_in_order_and_no_others() -> None:
    record = logging.LogRecord("gateway.access", logging.INFO, "", 0, "request", (), None)
    extra = {**FIELDS, "authorization": "Bearer secret", "upstream_ms": float("inf")}
    record.__dict__.update(extra)
    record.created = 1_000_000_000.25
    assert JsonFormatter().format(record) == (
        '{"time":"2001-09-09T01:46:40.250Z","level":"info","logger":"gateway.access",'
        '"message":"request","request_id":"r1","route":"site","status":200,"duration_ms":1.5,'
        '"client_ip":"192.0.2.1","upstream_ms":Infinity}'
    )
    try:
        raise KeyError("a secret in the exception's text")
    except KeyError:
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["exception"] == "KeyError" and "secret" not in json.dumps(line)


async def test_lines_are_flushed_once_per_loop_iteration(
    own_logger: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = own_logger
    for status in (200, 429, 502):
        logger.info("request", extra={**FIELDS, "status": status})
    assert stream.flushes == 0  # written, not yet flushed: the loop is still busy
    await asyncio.sleep(0)
    assert stream.flushes == 1
    assert [line["status"] for line in lines(stream)] == [200, 429, 502]
    assert {line["message"] for line in lines(stream)} == {"request"}
    logger.info("request", extra=FIELDS)
    await asyncio.sleep(0)
    assert stream.flushes == 2 and len(lines(stream)) == 4


def test_outside_a_loop_every_line_is_flushed(
    own_logger: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = own_logger
    logger.info("request", extra=FIELDS)
    assert stream.flushes == 1 and lines(stream)[0]["route"] == "site"


SESSION = "/api/chatkit/session"
ORIGIN = {"Origin": ALLOWED}


def records(capture: LogCapture, request_id: str) -> list[dict[str, Any]]:
    """One request's log lines, without the fields that differ run to run."""
    found = [json.loads(line) for line in capture.lines]
    return [
        {k: v for k, v in r.items() if k not in ("time", "duration_ms")}
        for r in found
        if r.get("request_id") == request_id
    ]


def access_line(request_id: str, status: int, **fields: Any) -> dict[str, Any]:
    line: dict[str, Any] = {"level": "info", "logger": "gateway.access", "message": "request"}
    line.update(request_id=request_id, route="site", method="POST", path=SESSION)
    line.update(status=status, client_ip="127.0.0.1", origin=ALLOWED)
    line.update(fields)
    return line


async def test_levels_and_filters_govern_the_access_log(
    gateway: Any, json_logs: LogCapture
) -> None:
    client = await gateway()
    access = logging.getLogger("gateway.access")

    def not_405(record: logging.LogRecord) -> bool:
        return record.__dict__.get("status") != 405

    access.addFilter(not_405)
    try:
        await client.get(SESSION, headers={**ORIGIN, "X-Request-ID": "req-filtered"})
        await client.post(SESSION, headers={**ORIGIN, "X-Request-ID": "req-kept"})
        access.setLevel(logging.WARNING)
        await client.post(SESSION, headers={**ORIGIN, "X-Request-ID": "req-quiet"})
    finally:
        access.removeFilter(not_405)
        access.setLevel(logging.NOTSET)
    assert records(json_logs, "req-filtered") == []
    [kept] = records(json_logs, "req-kept")
    assert kept["status"] == 200 and kept["message"] == "request"
    assert records(json_logs, "req-quiet") == []


def test_times_across_a_second_boundary_are_not_cached_wrong() -> None:
    fmt = JsonFormatter()
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", (), None)
    stamps = []
    for created in (1_000_000_000.999, 1_000_000_001.0, 1_000_000_001.25, 1_000_000_000.5):
        record.created = created
        stamps.append(json.loads(fmt.format(record))["time"])
    assert stamps == [
        "2001-09-09T01:46:40.999Z",
        "2001-09-09T01:46:41.000Z",
        "2001-09-09T01:46:41.250Z",
        "2001-09-09T01:46:40.500Z",
    ]


async def test_an_unhandled_error_is_logged_with_its_request_id_then_its_access_line(
    gateway: Any, json_logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("a detail that must not reach the log")

    client = await gateway()
    monkeypatch.setattr(type(client.app[UPSTREAM]), "create", broken)
    resp = await client.post(SESSION, headers={**ORIGIN, "X-Request-ID": "req-boom"})
    assert resp.status == 500 and resp.headers["X-Request-ID"] == "req-boom"
    assert await resp.json() == {"error": {"code": "internal_error", "message": "Internal error"}}
    assert records(json_logs, "req-boom") == [
        {
            "level": "error",
            "logger": "gateway",
            "message": "unhandled error",
            "request_id": "req-boom",
            "exception": "RuntimeError",
        },
        access_line("req-boom", 500, error_code="internal_error"),
    ]
    assert "must not reach" not in "\n".join(json_logs.lines)


async def test_error_code_is_in_the_access_line_exactly_for_error_answers(
    gateway: Any, json_logs: LogCapture
) -> None:
    client = await gateway()
    ok = await client.post(SESSION, headers={**ORIGIN, "X-Request-ID": "req-ok"})
    assert ok.status == 200
    refused = await client.post(
        SESSION, headers={"Origin": "https://evil.example", "X-Request-ID": "req-403"}
    )
    assert refused.status == 403
    assert await refused.json() == {
        "error": {"code": "origin_not_allowed", "message": "Origin not allowed"}
    }
    wrong = await client.get(SESSION, headers={**ORIGIN, "X-Request-ID": "req-405"})
    assert wrong.status == 405
    [ok_line] = records(json_logs, "req-ok")
    assert "error_code" not in ok_line and ok_line["status"] == 200
    [refused_line] = records(json_logs, "req-403")
    assert refused_line == {
        **access_line("req-403", 403, error_code="origin_not_allowed"),
        "origin": "https://evil.example",
    }
    [wrong_line] = records(json_logs, "req-405")
    assert wrong_line == access_line("req-405", 405, method="GET", error_code="method_not_allowed")


async def test_a_stream_that_breaks_after_its_answer_began_logs_its_error_code(
    gateway: Any, json_logs: LogCapture
) -> None:
    async with running_backend() as backend:
        route = {
            "name": "chat",
            "path": "/chatkit",
            "kind": "chatkit_proxy",
            "target": backend.url + "/broken/whole",
            "allowed_origins": [ALLOWED],
        }
        client = await gateway(routes=[route])
        body = {"type": "threads.list", "params": {}}
        headers = {**ORIGIN, "X-Request-ID": "req-broke"}
        async with client.post("/chatkit", json=body, headers=headers) as resp:
            assert resp.status == 200
            await resp.read()
    access = [r for r in records(json_logs, "req-broke") if r["logger"] == "gateway.access"]
    assert [(r["status"], r.get("error_code")) for r in access] == [(200, "upstream_error")]


# --- the access line's shortcut, against the logging library's own line ---------------


def formatter_line(name: str, created: float, fields: dict[str, Any]) -> str:
    record = logging.LogRecord(name, logging.INFO, "", 0, "request", (), None)
    record.__dict__.update(fields)
    record.created = created
    return JsonFormatter().format(record)


text = st.text(max_size=40)
times = st.floats(min_value=0, max_value=1e9)  # finite: perf_counter differences


@settings(max_examples=300, deadline=None)
@given(
    fields=st.builds(
        AccessFields,
        request_id=text,
        route=text,
        method=text,
        path=text,
        status=st.integers(min_value=-(2**70), max_value=2**70),
        duration_ms=times,
        client_ip=text,
        origin=st.none() | text,
        chatkit_type=st.none() | text,
        upstream_status=st.none() | st.integers(min_value=0, max_value=999),
        upstream_ms=st.none() | times,
        error_code=st.none() | text,
    ),
    created=st.floats(min_value=0, max_value=4e9),
)
def test_direct_line_is_the_formatter_line(fields: AccessFields, created: float) -> None:
    access = AccessLog(logging.getLogger("gateway.access"))
    expected = formatter_line("gateway.access", created, fields._asdict())
    assert access.line(created, fields) == expected


async def test_direct_lines_are_flushed_once_per_loop_iteration(
    own_logger: tuple[logging.Logger, CountingStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, stream = own_logger

    def no_records(*args: Any, **kwargs: Any) -> logging.LogRecord:
        raise AssertionError("the direct path makes no LogRecord")

    monkeypatch.setattr(logging.Logger, "makeRecord", no_records)
    access = AccessLog(logger)
    for status in (200, 429, 502):
        access.write(ACCESS._replace(status=status))
    assert stream.flushes == 0  # written, not yet flushed: the loop is still busy
    await asyncio.sleep(0)
    assert stream.flushes == 1
    assert [line["status"] for line in lines(stream)] == [200, 429, 502]
    assert {line["message"] for line in lines(stream)} == {"request"}
    access.write(ACCESS)
    await asyncio.sleep(0)
    assert stream.flushes == 2 and len(lines(stream)) == 4


def test_outside_a_loop_every_direct_line_is_flushed(
    own_logger: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = own_logger
    AccessLog(logger).write(ACCESS)
    assert stream.flushes == 1 and lines(stream)[0]["route"] == "site"


def test_another_handler_gets_a_record_like_logger_info_makes(
    own_logger: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = own_logger
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Keep()
    logger.addHandler(extra)
    try:
        AccessLog(logger).write(ACCESS)
        logger.info("request", extra=ACCESS._asdict())
    finally:
        logger.removeHandler(extra)
    ours, theirs = lines(stream)
    assert {k: v for k, v in ours.items() if k != "time"} == {
        k: v for k, v in theirs.items() if k != "time"
    }
    made, reference = seen
    assert made.getMessage() == "request" and made.levelno == logging.INFO
    for attr in ("name", "levelname", "thread", "threadName", "process", "status", "client_ip"):
        assert getattr(made, attr) == getattr(reference, attr), attr
    assert abs(made.created - reference.created) < 5
