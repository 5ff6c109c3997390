"""chatkit_proxy routes, end to end: a real openai-chatkit server behind the gateway.

No assertion depends on wall-clock thresholds: incremental delivery is shown by the
backend waiting on a gate that the test opens only after it has read the first events
through the gateway; a buffering proxy would never deliver them and the test would fail.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.app import create_app
from gateway.concurrency import Slots
from gateway.metrics import Metrics
from tests.conftest import ALLOWED, LogCapture, make_policy
from tests.support.chatkit_backend import WORDS, Backend, free_port, running_backend

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

Client = TestClient[web.Request, web.Application]
ORIGIN = {"Origin": ALLOWED}
SAFETY = 5.0  # only ever reached when something is broken: never a pass/fail threshold


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as server:
        yield server


def chat_route(target: str, **kw: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "chat",
        "path": "/chatkit",
        "kind": "chatkit_proxy",
        "target": target,
        "allowed_origins": [ALLOWED],
    }
    route.update(kw)
    return route


def create_req(text: str = "hi") -> dict[str, Any]:
    msg = {"content": [{"type": "input_text", "text": text}], "attachments": []}
    return {"type": "threads.create", "params": {"input": {**msg, "inference_options": {}}}}


LIST_REQ = {"type": "threads.list", "params": {}}


async def start(gateway: Any, backend: Backend, **route: Any) -> tuple[Client, Metrics]:
    metrics = Metrics()
    target = route.pop("target", backend.url + "/chatkit")
    client = await gateway(routes=[chat_route(target, **route)], metrics=metrics)
    return client, metrics


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Events as a browser's SSE parser dispatches them: only on the blank line."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        while b"\n\n" in buf:
            raw, buf = buf.split(b"\n\n", 1)
            assert raw.startswith(b"data: "), raw
            yield json.loads(raw[6:])


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value("chatkit_gateway_" + name, labels) or 0.0


async def until(condition: Any) -> None:
    async with asyncio.timeout(SAFETY):
        while not condition():
            await asyncio.sleep(0.01)


async def test_events_arrive_while_the_backend_is_still_responding(
    gateway: Any, backend: Backend
) -> None:
    client, metrics = await start(gateway, backend)
    backend.server.gate.clear()
    seen: list[str] = []
    async with asyncio.timeout(SAFETY):
        resp = await client.post("/chatkit", json=create_req(), headers=ORIGIN)
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Cache-Control"] == "no-cache"
        assert "Content-Encoding" not in resp.headers
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert resp.headers["X-Request-ID"]
        async for event in sse_events(resp):
            seen.append(event["type"])
            if event["type"] == "thread.item.added":
                # The backend is parked before its first delta: what we hold came early.
                assert not backend.server.gate.is_set()
                assert sample(metrics, "open_streams", route="chat") == 1
                backend.server.gate.set()
            if event["type"] == "thread.item.updated":
                seen.append(event["update"]["delta"])
    assert seen[0] == "thread.created"
    assert [s for s in seen if s in WORDS] == list(WORDS)
    assert seen[-1] == "thread.item.done"
    assert sample(metrics, "open_streams", route="chat") == 0
    assert sample(metrics, "chatkit_requests_total", route="chat", type="threads.create") == 1
    assert sample(metrics, "upstream_requests_total", route="chat", outcome="ok") == 1
    assert sample(metrics, "upstream_first_byte_seconds_count", route="chat") == 1
    assert sample(metrics, "upstream_duration_seconds_count", route="chat") == 1


async def test_json_types_pass_through(gateway: Any, backend: Backend) -> None:
    client, metrics = await start(gateway, backend)
    async with client.post("/chatkit", json=create_req(), headers=ORIGIN) as resp:
        events = [e async for e in sse_events(resp)]
    thread_id = events[0]["thread"]["id"]
    resp = await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert [t["id"] for t in (await resp.json())["data"]] == [thread_id]
    items = {"type": "items.list", "params": {"thread_id": thread_id, "order": "asc"}}
    resp = await client.post("/chatkit", json=items, headers=ORIGIN)
    kinds = [i["type"] for i in (await resp.json())["data"]]
    assert kinds == ["user_message", "assistant_message"]
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert sample(metrics, "chatkit_requests_total", route="chat", type="threads.list") == 1
    assert sample(metrics, "chatkit_requests_total", route="chat", type="items.list") == 1


async def test_headers_toward_the_backend(gateway: Any, backend: Backend) -> None:
    client, _ = await start(gateway, backend, upstream_headers={"X-Backend-Key": "s3cret"})
    headers = {
        **ORIGIN,
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "timeout=5",
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Proto": "https",
        "X-Request-ID": "req-123",
        "Cookie": "session=abc",
        "Authorization": "Bearer user-token",
        "Accept-Encoding": "gzip",
    }
    await client.post("/chatkit", json=LIST_REQ, headers=headers)
    async with client.post("/chatkit", json=create_req(), headers=headers) as resp:
        assert resp.status == 200
        await resp.read()
    listed, created = backend.seen
    got = {k.lower(): v for k, v in listed.headers.items()}
    assert got["x-forwarded-for"] == "127.0.0.1"  # an untrusted peer's claim is dropped
    assert got["x-forwarded-proto"] == "http"
    assert got["x-request-id"] == "req-123"
    assert got["x-backend-key"] == "s3cret"
    assert got["cookie"] == "session=abc"
    assert got["authorization"] == "Bearer user-token"
    assert got["origin"] == ALLOWED
    assert got["accept-encoding"] == "gzip"  # JSON answers may come compressed
    assert "x-hop" not in got and "keep-alive" not in got
    assert json.loads(listed.body) == LIST_REQ
    assert {k.lower(): v for k, v in created.headers.items()}["accept-encoding"] == "identity"


async def test_forwarding_headers_behind_a_trusted_proxy(gateway: Any, backend: Backend) -> None:
    route = chat_route(backend.url + "/chatkit")
    client = await gateway(routes=[route], server={"trusted_proxies": ["127.0.0.1/32"]})
    headers = {**ORIGIN, "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    await client.post("/chatkit", json=LIST_REQ, headers=headers)
    got = {k.lower(): v for k, v in backend.seen[0].headers.items()}
    assert got["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert got["x-forwarded-proto"] == "https"


async def test_foreign_origin_never_reaches_the_backend(gateway: Any, backend: Backend) -> None:
    client, metrics = await start(gateway, backend)
    evil = {"Origin": "https://evil.example"}
    resp = await client.post("/chatkit", json=create_req(), headers=evil)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "origin_not_allowed"
    resp = await client.post("/chatkit", json=LIST_REQ)  # no Origin at all
    assert resp.status == 403
    pre = {**evil, "Access-Control-Request-Method": "POST"}
    resp = await client.options("/chatkit", headers=pre)
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options("/chatkit", headers={**ORIGIN, **pre, **ORIGIN})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    resp = await client.get("/chatkit", headers=ORIGIN)
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST, OPTIONS"
    assert backend.seen == []
    assert sample(metrics, "origin_rejected_total", route="chat") == 3


async def test_every_path_below_the_route_gets_the_policy(gateway: Any, backend: Backend) -> None:
    """A decoded newline in the path still reaches the route's checks (the catch-all must
    match it): a preflight is answered, a foreign origin refused, a POST refused 404."""
    client, _ = await start(gateway, backend)
    path = URL("/chatkit/L%0A%C2%BE", encoded=True)
    pre = {"Access-Control-Request-Method": "POST"}
    resp = await client.options(path, headers={**ORIGIN, **pre})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
    resp = await client.options(path, headers={"Origin": "https://evil.example", **pre})
    assert resp.status == 403
    resp = await client.post(path, json=create_req(), headers=ORIGIN)
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"
    assert backend.seen == []


async def test_per_type_limits(gateway: Any, backend: Backend) -> None:
    limits = [{"key": "client_ip", "requests": 1, "per": "1h", "types": ["threads.create"]}]
    client, metrics = await start(gateway, backend, rate_limits=limits)
    async with client.post("/chatkit", json=create_req(), headers=ORIGIN) as resp:
        assert resp.status == 200
        await resp.read()
    resp = await client.post("/chatkit", json=create_req(), headers=ORIGIN)
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["RateLimit"].endswith(";r=0;t=3600")
    for _ in range(3):  # other types are not counted by that limit
        resp = await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
        assert resp.status == 200
    assert len(backend.seen) == 4
    assert sample(metrics, "rate_limited_total", route="chat", key="client_ip") == 1


async def test_open_streams_are_capped_per_client(gateway: Any, backend: Backend) -> None:
    limits = [{"key": "client_ip", "requests": 3, "per": "1h", "types": ["threads.create"]}]
    client, metrics = await start(gateway, backend, max_streams_per_client=1, rate_limits=limits)
    backend.server.gate.clear()
    async with asyncio.timeout(SAFETY):
        first = await client.post("/chatkit", json=create_req(), headers=ORIGIN)
        await backend.server.responding.wait()
        resp = await client.post("/chatkit", json=create_req(), headers=ORIGIN)
        assert resp.status == 429
        assert (await resp.json())["error"]["code"] == "rate_limited"
        assert int(resp.headers["Retry-After"]) >= 1
        resp = await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
        assert resp.status == 200  # JSON requests are not streams
        backend.server.gate.set()
        assert [e async for e in sse_events(first)][-1]["type"] == "thread.item.done"
        async with client.post("/chatkit", json=create_req(), headers=ORIGIN) as again:
            assert again.status == 200  # the slot came back
            assert ";r=1;" in again.headers["RateLimit"]  # the refused one spent nothing
            await again.read()
    assert sample(metrics, "rate_limited_total", route="chat", key="streams") == 1
    assert sample(metrics, "open_streams", route="chat") == 0


async def test_client_disconnect_cancels_the_backend(gateway: Any, backend: Backend) -> None:
    client, metrics = await start(gateway, backend)
    await _disconnect_mid_stream(client.session, str(client.make_url("/chatkit")), backend, metrics)


async def test_disconnect_cancels_under_a_plain_runner(backend: Backend) -> None:
    """aiohttp's runner does not cancel handlers by default (TestServer always does): the
    app itself must ask for it, so `serve` and any other runner behave like the tests."""
    metrics = Metrics()
    app = create_app(make_policy(routes=[chat_route(backend.url + "/chatkit")]), metrics=metrics)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/chatkit"
            await _disconnect_mid_stream(session, url, backend, metrics)
    finally:
        await runner.cleanup()


async def _disconnect_mid_stream(
    session: aiohttp.ClientSession, url: str, backend: Backend, metrics: Metrics
) -> None:
    backend.server.gate.clear()
    async with asyncio.timeout(SAFETY):
        resp = await session.post(url, json=create_req(), headers=ORIGIN)
        async for event in sse_events(resp):
            if event["type"] == "thread.item.added":
                break
        resp.close()
        await backend.server.cancelled.wait()
    await until(lambda: sample(metrics, "open_streams", route="chat") == 0)
    assert not backend.server.gate.is_set()
    assert sample(metrics, "upstream_requests_total", route="chat", outcome="ok") == 1


async def test_oversize_bodies_get_413(gateway: Any, backend: Backend) -> None:
    client, _ = await start(gateway, backend, max_json_bytes=1024)  # the endpoint's own cap
    big = create_req("x" * 2000)
    resp = await client.post("/chatkit", json=big, headers=ORIGIN)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to refuse early
        for _ in range(4):
            yield b" " * 512

    resp = await client.post("/chatkit", data=chunked(), headers=ORIGIN)
    assert resp.status == 413
    assert backend.seen == []


async def test_bodies_that_are_not_chatkit_requests_get_400(gateway: Any, backend: Backend) -> None:
    client, _ = await start(gateway, backend)
    for body in (b"", b"not json", b"[1, 2]"):
        resp = await client.post("/chatkit", data=body, headers=ORIGIN)
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad_request"
    assert backend.seen == []


async def raw_post(client: Client, path: str) -> tuple[int, bytes]:
    """A request line exactly as written: HTTP clients would normalise these paths."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    body = json.dumps(LIST_REQ).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nOrigin: {ALLOWED}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = await reader.read()
    writer.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


@pytest.mark.parametrize(
    "path",
    [
        "/chatkit/../admin",
        "/chatkit/%2e%2e/admin",
        "/chatkit/.%2E/admin",
        "/chatkit/..%2fadmin",
        "/chatkit/upload%2f..%2f..%2fadmin",
        "/chatkit/..%5cadmin",
        "/chatkit/%252e%252e/admin",
        "/chatkit/./upload/x",
        "/chatkit//admin",
        "/chatkit/upload/%00",
        "/chat%6bit/upload/x",
    ],
)
async def test_traversal_is_refused(gateway: Any, backend: Backend, path: str) -> None:
    client, _ = await start(gateway, backend)
    status, body = await raw_post(client, path)
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"
    assert backend.seen == []


async def test_uploads_below_the_route_are_forwarded(gateway: Any, backend: Backend) -> None:
    client, metrics = await start(gateway, backend)
    form = aiohttp.FormData()
    form.add_field("file", b"\x89PNG" + b"\0" * 100, filename="a.png", content_type="image/png")
    resp = await client.post("/chatkit/upload/atc_1?x=1", data=form, headers=ORIGIN)
    assert resp.status == 200
    assert (await resp.json())["id"] == "atc_1"
    (seen,) = backend.seen
    assert seen.path == "/chatkit/upload/atc_1?x=1"
    assert b"\x89PNG" in seen.body
    assert seen.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert sample(metrics, "chatkit_requests_total", route="chat", type="other") == 1


async def test_backend_refused_or_failing_before_any_byte(gateway: Any, backend: Backend) -> None:
    metrics = Metrics()
    routes = [
        chat_route(f"http://127.0.0.1:{free_port()}/chatkit", name="down", path="/down"),
        chat_route(backend.url + "/error", name="error", path="/error"),
        chat_route(backend.url + "/slow", name="slow", path="/slow", stream_idle_timeout_seconds=1),
    ]
    client = await gateway(routes=routes, metrics=metrics)
    for path, status, code, outcome in [
        ("/down", 502, "upstream_error", "connection_error"),
        ("/error", 502, "upstream_error", "server_error"),
        ("/slow", 504, "upstream_timeout", "timeout"),
    ]:
        resp = await client.post(path, json=LIST_REQ, headers=ORIGIN)
        assert resp.status == status, path
        text = await resp.text()
        assert json.loads(text)["error"]["code"] == code
        assert "Traceback" not in text and "sk-leak" not in text
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
        name = path[1:]
        assert sample(metrics, "upstream_requests_total", route=name, outcome=outcome) == 1


async def read_all(resp: aiohttp.ClientResponse) -> tuple[list[dict[str, Any]], bool]:
    """The events a browser would dispatch, and whether the body ended properly."""
    events: list[dict[str, Any]] = []
    try:
        async for event in sse_events(resp):
            events.append(event)
    except aiohttp.ClientPayloadError:
        return events, False
    return events, True


async def test_backend_failing_mid_stream(
    gateway: Any, backend: Backend, json_logs: LogCapture
) -> None:
    metrics = Metrics()
    routes = [
        chat_route(backend.url + "/broken/whole", name="whole", path="/whole"),
        chat_route(backend.url + "/broken/half", name="half", path="/half"),
    ]
    client = await gateway(routes=routes, metrics=metrics)
    async with asyncio.timeout(SAFETY):
        # After a whole event: ChatKit's own error event, then a clean end.
        async with client.post("/whole", json=create_req(), headers=ORIGIN) as resp:
            events, clean = await read_all(resp)
        assert [e["type"] for e in events] == ["progress_update", "error"]
        assert events[1] == {"type": "error", "code": "stream.error", "allow_retry": True}
        assert clean
        # Inside an event: the answer is cut short, the half event never dispatched.
        async with client.post("/half", json=create_req(), headers=ORIGIN) as resp:
            events, clean = await read_all(resp)
        assert [e["type"] for e in events] == ["progress_update"]
        assert not clean
    for name in ("whole", "half"):
        assert sample(metrics, "upstream_requests_total", route=name, outcome="connection_error")
        assert sample(metrics, "open_streams", route=name) == 0
    broke = [json.loads(line) for line in json_logs.lines if "upstream stream broke" in line]
    assert [b["route"] for b in broke] == ["whole", "half"]


async def test_idle_stream_times_out_and_the_backend_is_cancelled(
    gateway: Any, backend: Backend
) -> None:
    client, metrics = await start(gateway, backend, stream_idle_timeout_seconds=1)
    backend.server.gate.clear()
    async with asyncio.timeout(SAFETY):
        async with client.post("/chatkit", json=create_req(), headers=ORIGIN) as resp:
            events, clean = await read_all(resp)
        await backend.server.cancelled.wait()
    assert events[-1]["type"] == "error" and clean
    assert sample(metrics, "upstream_requests_total", route="chat", outcome="timeout") == 1


async def test_backend_cookies_reach_only_their_own_client(gateway: Any, backend: Backend) -> None:
    """Set-Cookie passes through to the browser; the gateway never keeps it for the next."""
    by_name = backend.url.replace("127.0.0.1", "localhost")  # jars ignore cookies of IPs
    client, _ = await start(gateway, backend, target=by_name + "/cookie")
    resp = await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
    assert resp.status == 200
    assert resp.headers["Set-Cookie"].startswith("backend=1")
    client.session.cookie_jar.clear()  # the next request comes from someone else
    await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
    assert [s.headers.get("Cookie") for s in backend.seen] == [None, None]


def test_stream_slots_are_counted_per_key() -> None:
    """The handler's check is the binding one (the early check can race): unit level."""
    state = Slots(Metrics())
    assert state.take("a", 2) and state.take("a", 2)
    assert not state.take("a", 2) and state.full("a", 2)
    assert state.take("b", 2) and state.take("c", None)
    state.release("a")
    assert state.take("a", 2)
    for key in ("a", "a", "b", "c"):
        state.release(key)
    assert state._held == {}
