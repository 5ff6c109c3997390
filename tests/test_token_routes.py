"""Token routes as a browser and an operator see them: statuses, headers, bodies, metrics."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.metrics import Metrics
from tests.conftest import ALLOWED, TEST_KEY, make_policy, site_route
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

SESSION = "/api/chatkit/session"
REALTIME = "/api/realtime/secret"
H = {"Origin": ALLOWED}
EXPOSED = {"retry-after", "ratelimit", "ratelimit-policy", "x-request-id"}


async def error_of(resp: Any) -> str:
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return str(body["error"]["code"])


def assert_cors(resp: Any) -> None:
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in resp.headers["Vary"]
    exposed = {h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed >= EXPOSED


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_session_minted_with_server_key(gateway: Any, fake_openai: FakeOpenAI) -> None:
    client = await gateway()
    resp = await client.post(SESSION, headers=H, json={"device_id": "dev-1"})
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"client_secret", "expires_at"}
    assert body["client_secret"].startswith("ek_")
    assert resp.headers["Cache-Control"] == "no-store"
    assert_cors(resp)
    [sent] = fake_openai.requests_to("/chatkit/sessions")
    assert sent.headers["authorization"] == f"Bearer {TEST_KEY}"
    assert sent.headers["openai-beta"] == "chatkit_beta=v1"
    assert sent.headers["x-request-id"] == resp.headers["X-Request-ID"]
    assert sent.body["workflow"] == {"id": "wf_test"}
    assert sent.body["expires_after"] == {"anchor": "created_at", "seconds": 600}
    assert sent.body["rate_limits"] == {"max_requests_per_1_minute": 10}
    assert re.fullmatch(r"u_[0-9a-f]{32}", sent.body["user"])
    session = fake_openai.sessions[next(iter(fake_openai.sessions))]
    assert body == {"client_secret": session["client_secret"], "expires_at": session["expires_at"]}


async def test_user_is_stable_per_device_and_never_the_ip(
    gateway: Any, fake_openai: FakeOpenAI
) -> None:
    client = await gateway()
    for device in ("dev-1", "dev-1", "dev-2"):
        assert (await client.post(SESSION, headers=H, json={"device_id": device})).status == 200
    assert (await client.post(SESSION, headers=H)).status == 200  # falls back to the IP, hashed
    users = [r.body["user"] for r in fake_openai.requests_to("/chatkit/sessions")]
    assert users[0] == users[1] != users[2]
    assert users[3] not in users[:3] and "127.0.0.1" not in users[3]


async def test_browser_cannot_choose_workflow_or_model(
    gateway: Any, fake_openai: FakeOpenAI
) -> None:
    client = await gateway()
    sneaky = {"workflow": {"id": "wf_evil"}, "user": "admin", "model": "gpt-x", "api_key": "k"}
    assert (await client.post(SESSION, headers=H, json=sneaky)).status == 200
    assert (await client.post(REALTIME, headers=H, json={"session": {"model": "x"}})).status == 200
    [session] = fake_openai.requests_to("/chatkit/sessions")
    assert session.body["workflow"]["id"] == "wf_test" and session.body["user"] != "admin"
    [realtime] = fake_openai.requests_to("/realtime/client_secrets")
    assert realtime.body["session"] == {"type": "realtime", "model": "gpt-realtime"}
    assert realtime.body["expires_after"] == {"anchor": "created_at", "seconds": 600}
    assert "openai-beta" not in realtime.headers


async def test_realtime_secret(gateway: Any) -> None:
    client = await gateway()
    resp = await client.post(REALTIME, headers=H, data=b"")
    assert resp.status == 200
    body = await resp.json()
    assert body["client_secret"].startswith("ek_") and isinstance(body["expires_at"], int)
    assert resp.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b"\xff\xfe", None)],
)
async def test_bad_json_is_400(gateway: Any, body: bytes, content_type: str | None) -> None:
    client = await gateway()
    headers = dict(H)
    if content_type:
        headers["Content-Type"] = content_type
    resp = await client.post(SESSION, headers=headers, data=body)
    assert resp.status == 400
    assert await error_of(resp) == "bad_request"
    assert_cors(resp)


async def test_empty_and_empty_object_bodies_are_fine(gateway: Any) -> None:
    client = await gateway()
    assert (await client.post(SESSION, headers=H)).status == 200
    assert (await client.post(SESSION, headers=H, json={})).status == 200


async def test_origin_missing_or_foreign_is_403(gateway: Any, fake_openai: FakeOpenAI) -> None:
    metrics = Metrics()
    client = await gateway(metrics=metrics)
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        resp = await client.post(SESSION, headers=headers)
        assert resp.status == 403
        assert await error_of(resp) == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in resp.headers
    assert fake_openai.received == []
    assert sample(metrics, "chatkit_gateway_origin_rejected_total", route="site") == 3


async def test_allow_missing_origin(gateway: Any) -> None:
    route = {
        "name": "server",
        "path": "/s",
        "kind": "chatkit_session",
        "workflow_id": "wf_test",
        "allow_missing_origin": True,
    }
    client = await gateway(routes=[route])
    assert (await client.post("/s")).status == 200
    assert (await client.post("/s", headers={"Origin": "https://evil.example"})).status == 403


async def test_preflight_allowed_and_foreign(gateway: Any) -> None:
    client = await gateway()
    ask = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    resp = await client.options(SESSION, headers={**H, **ask})
    assert resp.status in (200, 204)
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in resp.headers["Vary"]
    foreign = await client.options(SESSION, headers={"Origin": "https://evil.example", **ask})
    assert foreign.status == 403
    assert not [h for h in foreign.headers if h.lower().startswith("access-control-allow")]


async def test_other_methods_are_405_with_allow(gateway: Any) -> None:
    client = await gateway()
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        resp = await client.request(method, SESSION, headers=H)
        assert resp.status == 405
        assert resp.headers["Allow"] == "POST, OPTIONS"
        assert await error_of(resp) == "method_not_allowed"
        assert_cors(resp)


async def test_unknown_path_is_404_json(gateway: Any) -> None:
    client = await gateway()
    resp = await client.post("/wp-admin.php", headers=H)
    assert resp.status == 404
    assert await error_of(resp) == "not_found"


async def test_body_over_limit_is_413(gateway: Any, fake_openai: FakeOpenAI) -> None:
    client = await gateway()
    resp = await client.post(SESSION, headers=H, data=b'{"x": "' + b"a" * 20000 + b'"}')
    assert resp.status == 413
    assert await error_of(resp) == "payload_too_large"
    assert_cors(resp)

    async def chunks() -> Any:  # no Content-Length: the cap holds while reading
        for _ in range(20):
            yield b" " * 1000

    resp = await client.post(SESSION, headers=H, data=chunks())
    assert resp.status == 413
    assert fake_openai.received == []


async def test_rate_limit_headers_and_429(gateway: Any, fake_openai: FakeOpenAI) -> None:
    metrics = Metrics()
    route = site_route(
        {"key": "client_ip", "requests": 3, "per": "1h"},
        {"key": "global", "requests": 1000, "per": "1d"},
    )
    client = await gateway(routes=[route], metrics=metrics)
    seen = []
    for _ in range(3):
        resp = await client.post(SESSION, headers=H)
        assert resp.status == 200
        assert resp.headers["RateLimit-Policy"] == '"client_ip_3_per_1h";q=3;w=3600'
        seen.append(resp.headers["RateLimit"])
    assert [re.sub(r";t=\d+", "", s) for s in seen] == [
        f'"client_ip_3_per_1h";r={n}' for n in (2, 1, 0)
    ]
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 429
    assert await error_of(resp) == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 1200
    assert resp.headers["RateLimit"].startswith('"client_ip_3_per_1h";r=0;t=')
    assert resp.headers["Cache-Control"] == "no-store"
    assert_cors(resp)
    assert len(fake_openai.received) == 3
    assert sample(metrics, "chatkit_gateway_rate_limited_total", route="site", key="client_ip") == 1


async def test_forwarded_for_from_untrusted_peer_never_changes_bucket(gateway: Any) -> None:
    route = site_route({"key": "client_ip", "requests": 2, "per": "1h"})
    client = await gateway(routes=[route])
    statuses = [
        (await client.post(SESSION, headers={**H, "X-Forwarded-For": f"10.0.0.{i}"})).status
        for i in range(4)
    ]
    assert statuses == [200, 200, 429, 429]


async def test_forwarded_for_from_trusted_proxy_is_believed(gateway: Any) -> None:
    route = site_route({"key": "client_ip", "requests": 1, "per": "1h"})
    client = await gateway(routes=[route], server={"trusted_proxies": ["127.0.0.0/8", "::1/128"]})

    async def post(xff: str) -> int:
        resp = await client.post(SESSION, headers={**H, "X-Forwarded-For": xff})
        return int(resp.status)

    assert await post("203.0.113.7") == 200
    assert await post("203.0.113.8") == 200
    # The client wrote a fake left-most hop; the right-most untrusted one is still itself.
    assert await post("198.51.100.1, 203.0.113.7") == 429
    assert await post("2001:db8::1") == 200
    assert await post("2001:db8::1, 127.0.0.5") == 429  # a trusted hop is skipped


@pytest.mark.parametrize(
    ("status", "extra", "code", "expected"),
    [
        (401, {}, "upstream_auth_failed", 502),
        (403, {}, "upstream_auth_failed", 502),
        (400, {}, "upstream_error", 502),
        (429, {"retry-after": "17"}, "upstream_rate_limited", 429),
    ],
)
async def test_upstream_errors_map_to_table(
    gateway: Any, fake_openai: FakeOpenAI, status: int, extra: dict[str, str], code: str,
    expected: int,
) -> None:  # fmt: skip
    metrics = Metrics()
    client = await gateway(metrics=metrics)
    fake_openai.fail_next(status, headers=extra)
    resp = await client.post(SESSION, headers=H)
    assert resp.status == expected
    assert await error_of(resp) == code
    assert_cors(resp)
    if status == 429:
        assert resp.headers["Retry-After"] == "17"
    assert len(fake_openai.received) == 1  # 4xx are never retried


async def test_unknown_workflow_is_502_workflow_not_found(
    gateway: Any, fake_openai: FakeOpenAI
) -> None:
    fake_openai.known_workflows.clear()
    client = await gateway()
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 502
    assert await error_of(resp) == "workflow_not_found"


async def test_5xx_is_retried_then_succeeds(gateway: Any, fake_openai: FakeOpenAI) -> None:
    metrics = Metrics()
    client = await gateway(metrics=metrics)
    fake_openai.fail_next(503, times=2)
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 200
    assert len(fake_openai.requests_to("/chatkit/sessions")) == 3
    assert sample(metrics, "chatkit_gateway_upstream_requests_total", route="site",
                  outcome="server_error") == 2  # fmt: skip
    assert sample(metrics, "chatkit_gateway_upstream_requests_total", route="site",
                  outcome="ok") == 1  # fmt: skip


async def test_5xx_after_retries_is_502(gateway: Any, fake_openai: FakeOpenAI) -> None:
    client = await gateway()
    fake_openai.fail_next(500, times=5, text="<html>secret stack trace</html>")
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 502
    assert await error_of(resp) == "upstream_error"
    assert "stack trace" not in await resp.text()
    assert len(fake_openai.received) == 3  # one try + retries: 2


async def test_dropped_connection_is_retried(gateway: Any, fake_openai: FakeOpenAI) -> None:
    client = await gateway()
    fake_openai.drop_next(times=1)
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 200
    assert len(fake_openai.received) == 2


async def test_connection_refused_is_502(gateway: Any) -> None:
    client = await gateway(base_url="http://127.0.0.1:9/v1")  # discard port: nothing listens
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 502
    assert await error_of(resp) == "upstream_error"


async def test_timeout_is_504(gateway: Any, fake_openai: FakeOpenAI) -> None:
    metrics = Metrics()
    client = await gateway(metrics=metrics, upstream={"timeout_seconds": 0.2})
    fake_openai.delay_next(2.0)
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 504
    assert await error_of(resp) == "upstream_timeout"
    assert sample(metrics, "chatkit_gateway_upstream_requests_total", route="site",
                  outcome="timeout") == 1  # fmt: skip


async def test_request_id_echoed_when_sane_else_new(gateway: Any, fake_openai: FakeOpenAI) -> None:
    client = await gateway()
    resp = await client.post(SESSION, headers={**H, "X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    assert fake_openai.received[-1].headers["x-request-id"] == "abc-123"
    for bad in ("x" * 129, "has space", "é"):
        resp = await client.post(SESSION, headers={**H, "X-Request-ID": bad})
        new = resp.headers["X-Request-ID"]
        assert new != bad and re.fullmatch(r"[0-9a-f]{32}", new)
    resp = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])


async def test_security_headers_and_no_banner(gateway: Any) -> None:
    client = await gateway()
    for resp in (await client.post(SESSION, headers=H), await client.get("/nope")):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "aiohttp" not in resp.headers.get("Server", "").lower()
        assert "python" not in resp.headers.get("Server", "").lower()


async def test_metrics_after_traffic(gateway: Any) -> None:
    client = await gateway()
    await client.post(SESSION, headers=H)
    await client.post(SESSION, headers={"Origin": "https://evil.example"})
    await client.post("/random/path/1", headers=H)
    await client.post("/random/path/2", headers=H)
    text = await (await client.get("/metrics")).text()
    assert 'chatkit_gateway_requests_total{route="site",status="200"} 1.0' in text
    assert 'chatkit_gateway_requests_total{route="site",status="403"} 1.0' in text
    assert 'chatkit_gateway_requests_total{route="unmatched",status="404"} 2.0' in text
    assert 'chatkit_gateway_origin_rejected_total{route="site"} 1.0' in text
    assert 'chatkit_gateway_upstream_requests_total{outcome="ok",route="site"} 1.0' in text
    assert 'chatkit_gateway_request_duration_seconds_count{route="site"} 2.0' in text
    assert 'chatkit_gateway_upstream_duration_seconds_count{route="site"} 1.0' in text
    assert "chatkit_gateway_in_flight_requests" in text
    assert 'chatkit_gateway_build_info{upstream="openai",version="0.1.0"} 1.0' in text
    assert "evil.example" not in text and "/random/path" not in text


async def test_ops_endpoints(gateway: Any) -> None:
    client = await gateway()
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    resp = await client.post("/healthz")
    assert resp.status == 405 and await error_of(resp) == "method_not_allowed"


async def test_index_says_what_answers_here(gateway: Any) -> None:
    client = await gateway()
    resp = await client.get("/")
    assert resp.status == 200 and resp.content_type == "application/json"
    index = await resp.json()
    assert index["service"] == "chatkit-gateway"
    assert {"name": "site", "path": SESSION, "kind": "chatkit_session"} in index["routes"]
    assert (index["openapi"], index["healthz"], index["metrics"]) == (
        "/openapi.json",
        "/healthz",
        "/metrics",
    )
    assert "README" in index["docs"]
    resp = await client.post("/", headers=H)
    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD"
    text = await (await client.get("/metrics")).text()
    assert 'chatkit_gateway_requests_total{route="ops",status="200"}' in text


async def test_a_route_at_the_root_owns_it(gateway: Any) -> None:
    client = await gateway(routes=[site_route(name="root", path="/")])
    resp = await client.post("/", headers=H)
    assert resp.status == 200 and "client_secret" in await resp.json()
    resp = await client.get("/", headers=H)
    assert resp.status == 405 and await error_of(resp) == "method_not_allowed"


async def test_access_log_fields_and_no_secrets(
    gateway: Any, fake_openai: FakeOpenAI, json_logs: Any
) -> None:
    client = await gateway()
    resp = await client.post(
        SESSION, headers={**H, "Authorization": "Bearer browser-token"}, json={"device_id": "d"}
    )
    secret = (await resp.json())["client_secret"]
    fake_openai.fail_next(401)
    await client.post(SESSION, headers=H)
    records = [json.loads(line) for line in json_logs.lines]
    access = [r for r in records if r["message"] == "request" and r.get("route") == "site"]
    assert access[0]["status"] == 200 and access[1]["status"] == 502
    for key in ("request_id", "route", "method", "status", "duration_ms", "client_ip", "origin"):
        assert key in access[0]
    assert access[0]["upstream_status"] == 200 and "upstream_ms" in access[0]
    assert access[1]["error_code"] == "upstream_auth_failed"
    everything = "\n".join(json_logs.lines)
    for leak in (TEST_KEY, secret, "browser-token", TEST_KEY[:12]):
        assert leak not in everything
    assert any(r["level"] == "error" and "API key" in r["message"] for r in records)


async def test_stub_upstream_answers_without_openai(gateway: Any, fake_openai: FakeOpenAI) -> None:
    metrics = Metrics()
    client: TestClient[Any, Any] = await gateway(policy=make_policy(stub=True), metrics=metrics)
    resp = await client.post(SESSION, headers=H)
    assert resp.status == 200
    assert (await resp.json())["client_secret"].startswith("ek_stub_")
    assert fake_openai.received == []
    text = await (await client.get("/metrics")).text()
    assert 'upstream="stub"' in text
