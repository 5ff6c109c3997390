"""The slow-client guard reads private aiohttp names (http_protocol.AIOHTTP_PRIVATE). An
aiohttp without one of them must not stop the gateway: the listener says so (an error log
line naming what is missing, chatkit_gateway_slow_client_guard{state="disabled"}) and
serves with aiohttp's own handler. With the real aiohttp, the guard is active."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway import http_protocol
from gateway.app import create_app
from gateway.listener import open_listener
from gateway.metrics import Metrics
from tests.conftest import ALLOWED, LogCapture, make_policy
from tests.support.rawhttp import exchange

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

SESSION = "/api/chatkit/session"
GARBAGE = b"NOT HTTP AT ALL\r\n\r\n"


@contextlib.asynccontextmanager
async def listening(metrics: Metrics) -> AsyncIterator[int]:
    """The stack `serve` runs (create_app behind open_listener), stub upstream."""
    runner, site = await open_listener(
        create_app(make_policy(stub=True), metrics=metrics), "127.0.0.1", 0, shutdown_timeout=1
    )
    try:
        yield site.port
    finally:
        await runner.cleanup()


async def token(port: int) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}{SESSION}", headers={"Origin": ALLOWED}) as resp,
    ):
        return resp.status, await resp.json()


def guard_state(metrics: Metrics) -> dict[str, float | None]:
    return {
        state: metrics.registry.get_sample_value(
            "chatkit_gateway_slow_client_guard", {"state": state}
        )
        for state in ("active", "disabled")
    }


def guard_errors(logs: LogCapture) -> list[dict[str, object]]:
    records = [json.loads(line) for line in logs.lines]
    return [r for r in records if "slow-client guard" in str(r["message"])]


def test_the_real_aiohttp_has_every_name_the_guard_reads() -> None:
    assert http_protocol.missing_internals() == ()


async def test_with_the_real_aiohttp_the_guard_is_active(json_logs: LogCapture) -> None:
    metrics = Metrics()
    async with listening(metrics) as port:
        status, body = await token(port)
        garbage = await exchange(port, GARBAGE)
    assert status == 200 and "client_secret" in body, body
    assert guard_state(metrics) == {"active": 1.0, "disabled": 0.0}
    assert guard_errors(json_logs) == []
    # The guard's own answer to a malformed request: JSON, not aiohttp's text/plain.
    assert garbage is not None and garbage.status == 400
    assert garbage.error_code() == "bad_request"


async def test_an_aiohttp_without_a_private_name_serves_with_its_own_limits(
    json_logs: LogCapture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A release that renamed RequestHandler._messages (as if 4.0 called it _queue).
    renamed = tuple(
        "_queue" if name == "_messages" else name for name in http_protocol.AIOHTTP_PRIVATE
    )
    monkeypatch.setattr(http_protocol, "AIOHTTP_PRIVATE", renamed)
    metrics = Metrics()
    async with listening(metrics) as port:
        status, body = await token(port)
        garbage = await exchange(port, GARBAGE)
    assert status == 200 and "client_secret" in body, body
    assert guard_state(metrics) == {"active": 0.0, "disabled": 1.0}
    [line] = guard_errors(json_logs)
    assert line["level"] == "error", line
    assert f"aiohttp {aiohttp.__version__} lacks _queue" in str(line["detail"]), line
    # aiohttp's own handler answered the malformed request (text/plain), the guard did not.
    assert garbage is not None and garbage.status == 400
    assert garbage.headers["Content-Type"].startswith("text/plain"), garbage
