"""JSON log lines, and the access log's two shortcuts: a line rendered straight into the
gateway's own handler must be the formatter's line byte for byte, and any other handler
or filter still sees an ordinary record."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.accesslog import AccessLog
from gateway.logs import REQUEST_FIELDS, JsonFormatter, JsonStreamHandler

FIELDS: dict[str, Any] = {
    "request_id": "r1",
    "route": "site",
    "status": 200,
    "duration_ms": 1.5,
    "client_ip": "192.0.2.1",
    "origin": None,
}


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


def formatter_line(name: str, created: float, fields: dict[str, Any]) -> str:
    record = logging.LogRecord(name, logging.INFO, "", 0, "request", (), None)
    record.__dict__.update(fields)
    record.created = created
    return JsonFormatter().format(record)


values = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.fixed_dictionaries({}, optional={name: values for name in REQUEST_FIELDS}),
    created=st.floats(min_value=0, max_value=4e9),
)
def test_direct_line_is_the_formatter_line(fields: dict[str, Any], created: float) -> None:
    access = AccessLog(logging.getLogger("gateway.access"))
    assert access.line(created, fields) == formatter_line("gateway.access", created, fields)


async def test_direct_lines_are_flushed_once_per_loop_iteration(
    own_logger: tuple[logging.Logger, CountingStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, stream = own_logger

    def no_records(self: AccessLog, fields: dict[str, Any]) -> logging.LogRecord:
        raise AssertionError("the direct path makes no LogRecord")

    monkeypatch.setattr(AccessLog, "_record", no_records)
    access = AccessLog(logger)
    for status in (200, 429, 502):
        access.write({**FIELDS, "status": status})
    assert stream.flushes == 0  # written, not yet flushed: the loop is still busy
    await asyncio.sleep(0)
    assert stream.flushes == 1
    assert [line["status"] for line in lines(stream)] == [200, 429, 502]
    assert {line["message"] for line in lines(stream)} == {"request"}
    access.write(dict(FIELDS))
    await asyncio.sleep(0)
    assert stream.flushes == 2 and len(lines(stream)) == 4


def test_outside_a_loop_every_line_is_flushed(
    own_logger: tuple[logging.Logger, CountingStream],
) -> None:
    logger, stream = own_logger
    AccessLog(logger).write(dict(FIELDS))
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
        AccessLog(logger).write(dict(FIELDS))
        logger.info("request", extra=FIELDS)
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
    assert made.msecs == pytest.approx((made.created % 1) * 1000)


def test_levels_and_filters_still_apply(own_logger: tuple[logging.Logger, CountingStream]) -> None:
    logger, stream = own_logger
    access = AccessLog(logger)
    assert access.enabled()
    assert not AccessLog(logging.Logger("quiet", logging.WARNING)).enabled()
    logger.addFilter(lambda record: record.__dict__.get("status") != 404)
    access.write({**FIELDS, "status": 404})
    access.write({**FIELDS, "status": 201})
    assert [line["status"] for line in lines(stream)] == [201]


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
