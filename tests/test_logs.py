"""JSON log lines: the access log's shortcut still goes through logging's levels,
filters and handlers, and its lines match what `Logger.info` would have produced."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from gateway.logs import AccessLog, JsonFormatter, setup_logging

FIELDS = {
    "request_id": "r1",
    "route": "site",
    "status": 200,
    "duration_ms": 1.5,
    "client_ip": "192.0.2.1",
    "origin": None,
}


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    out = io.StringIO()
    setup_logging("INFO", out)
    yield out
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_access_line_is_the_line_logger_info_writes(stream: io.StringIO) -> None:
    logger = logging.getLogger("gateway.access.test")
    before = time.time()
    AccessLog(logger).write(dict(FIELDS))
    logger.info("request", extra=FIELDS)
    ours, theirs = lines(stream)
    assert ours.keys() == theirs.keys()
    assert {k: v for k, v in ours.items() if k != "time"} == {
        k: v for k, v in theirs.items() if k != "time"
    }
    assert "origin" not in ours  # None fields are left out
    stamp = str(ours["time"])
    assert stamp.endswith("Z") and len(stamp) == len("2026-11-25T22:00:00.123Z")
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before))
    assert stamp[:19] >= whole


def test_access_log_obeys_levels_and_filters(stream: io.StringIO) -> None:
    logger = logging.getLogger("gateway.access.filtered")
    access = AccessLog(logger)
    logger.setLevel(logging.WARNING)
    assert not access.enabled()
    logger.setLevel(logging.NOTSET)
    assert access.enabled()
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
