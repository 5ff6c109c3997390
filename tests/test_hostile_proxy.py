"""Hostile input against chatkit_proxy routes, round two: each test names its finding.

Deterministic: nothing waits on a wall-clock threshold to pass. What must happen "before"
something (a refusal before the body is sent, a byte at the backend before the upload has
ended) is shown by the client holding back the rest until it has seen the effect; a
gateway doing it the old way never shows it, and the test fails at SAFETY.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from examples.chatkit_server.server import build_app
from gateway.policy import PolicyError
from tests.conftest import ALLOWED, make_policy, policy_yaml
from tests.support.chatkit_backend import Backend, free_port, running_backend
from tests.test_proxy import LIST_REQ, ORIGIN, SAFETY, chat_route, create_req, raw_post, start

DEVICE_A = "device-a-0123456789abcdef"
DEVICE_B = "device-b-0123456789abcdef"


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as server:
        yield server


# --- A backend of our own for uploads and floods ------------------------------------


@dataclass
class Probe:
    url: str
    received: int = 0  # upload bytes so far
    first_mib: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # a handler finished, any way
    complete: list[int] = field(default_factory=list)  # sizes of uploads read to the end
    headers: list[dict[str, str]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_probe() -> AsyncIterator[Probe]:
    probe = Probe("")

    async def upload(request: web.Request) -> web.Response:
        probe.headers.append(dict(request.headers))
        try:
            size = 0
            async for chunk in request.content.iter_any():
                size += len(chunk)
                probe.received += len(chunk)
                if size >= 1 << 20:
                    probe.first_mib.set()
            probe.complete.append(size)
            return web.json_response({"bytes": size})
        finally:
            probe.ended.set()

    async def flood(request: web.Request) -> web.StreamResponse:
        """An event stream that never ends by itself: 64 KiB events as fast as allowed."""
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = b'data: {"type":"progress_update","text":"' + b"x" * 65536 + b'"}\n\n'
        try:
            while True:
                await response.write(event)
        finally:
            probe.ended.set()

    async def cached_sse(request: web.Request) -> web.StreamResponse:
        await request.read()
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "max-age=3600"}
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        await response.write(b'data: {"type":"progress_update","text":"hi"}\n\n')
        return response

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/chatkit/upload/{id}", upload)
    app.router.add_post("/flood", flood)
    app.router.add_post("/cached", cached_sse)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    probe.url = f"http://127.0.0.1:{port}"
    try:
        yield probe
    finally:
        await runner.cleanup()


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    async with running_probe() as server:
        yield server


async def raw_exchange(port: int | None, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Sends a request head (and maybe part of a body), reads the answer's status line
    and body, without sending anything more."""
    assert port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        async with asyncio.timeout(SAFETY):
            status_line = await reader.readline()
            headers = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in headers.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            payload = await reader.readexactly(length)
        return int(status_line.split()[1]), payload
    finally:
        writer.close()


def post_head(path: str, length: int, *extra: str) -> str:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: x",
        f"Origin: {ALLOWED}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
        *extra,
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


# --- 1. One JSON body must not take a pod down ----------------------------------------


async def test_finding1_json_has_its_own_small_cap(gateway: Any, backend: Backend) -> None:
    """The endpoint's JSON is capped by max_json_bytes (256 KiB by default), not by the
    10 MiB meant for uploads: a declared length over it is refused before one byte is
    read, and a chunked body as soon as it passes the cap."""
    client, _ = await start(gateway, backend)
    status, body = await raw_exchange(client.port, post_head("/chatkit", 300 * 1024))
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"type":"threads.list","a":['
        for _ in range(300):
            yield b"[]," * 341  # ~1 KiB each
        yield b"[]]}"

    resp = await client.post("/chatkit", data=chunked(), headers=ORIGIN)
    assert resp.status == 413
    assert backend.seen == []


async def test_finding1_limits_without_types_refuse_before_the_body_is_read(
    gateway: Any, backend: Backend
) -> None:
    """A client over a limit that needs no body is refused on its headers alone: the
    gateway answers 429 while the client has not sent a byte of its (large) body."""
    limits = [{"key": "client_ip", "requests": 1, "per": "1h"}]
    client, _ = await start(gateway, backend, rate_limits=limits)
    resp = await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
    assert resp.status == 200
    status, body = await raw_exchange(client.port, post_head("/chatkit", 200 * 1024))
    assert status == 429
    assert json.loads(body)["error"]["code"] == "rate_limited"
    assert len(backend.seen) == 1


async def test_finding1_typed_limits_after_the_body_and_the_tightest_reported(
    gateway: Any, backend: Backend
) -> None:
    limits = [
        {"key": "client_ip", "requests": 100, "per": "1h"},
        {"key": "client_ip", "requests": 2, "per": "1h", "types": ["threads.list"]},
    ]
    client, _ = await start(gateway, backend, rate_limits=limits)
    resp = await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
    assert resp.status == 200
    assert resp.headers["RateLimit-Policy"].endswith(";q=2;w=3600")
    assert ";r=1;" in resp.headers["RateLimit"]
    items = {"type": "items.list", "params": {"thread_id": "thr_x"}}
    resp = await client.post("/chatkit", json=items, headers=ORIGIN)
    assert resp.headers["RateLimit-Policy"].endswith(";q=100;w=3600")  # the typed one is not spent
    assert ";r=98;" in resp.headers["RateLimit"]


async def test_finding1_deep_or_wide_json_is_bounded(gateway: Any, backend: Backend) -> None:
    client, _ = await start(gateway, backend)
    deep = b'{"type":"threads.list","a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = await client.post("/chatkit", data=deep, headers=ORIGIN)
    assert resp.status in (400, 413)
    assert (await resp.json())["error"]["code"] in ("bad_request", "payload_too_large")
    wide = b'{"type":"threads.list","params":{},"a":[' + b"[]," * 80_000 + b"[]]}"  # under 256 KiB
    resp = await client.post("/chatkit", data=wide, headers=ORIGIN)
    assert resp.status == 200  # parsed (a few ms), forwarded as is
    assert len(backend.seen) == 1


# --- 2. Uploads are streamed, and bounded per client -------------------------------


async def test_finding2_uploads_reach_the_backend_while_still_being_sent(
    gateway: Any, probe: Probe
) -> None:
    """10 MiB pass through while the client holds back all but the first MiB until the
    backend has it: a gateway that buffers the body never forwards that first MiB."""
    client = await gateway(routes=[chat_route(probe.url + "/chatkit")])
    mib = b"\0" * (1 << 20)

    async def body() -> AsyncIterator[bytes]:
        yield mib
        await asyncio.wait_for(probe.first_mib.wait(), SAFETY)
        for _ in range(9):
            yield mib

    headers = {**ORIGIN, "Content-Type": "application/octet-stream"}
    resp = await client.post("/chatkit/upload/atc_1", data=body(), headers=headers)
    assert resp.status == 200
    assert (await resp.json())["bytes"] == 10 << 20
    assert probe.complete == [10 << 20]


async def test_finding2_an_upload_over_the_cap_is_refused_or_cut_off(
    gateway: Any, probe: Probe
) -> None:
    route = chat_route(probe.url + "/chatkit", max_body_bytes=1 << 20)
    client = await gateway(routes=[route])
    status, _ = await raw_exchange(client.port, post_head("/chatkit/upload/atc_1", 2 << 20))
    assert status == 413  # said so up front: refused before anything reaches the backend
    assert probe.headers == []

    async def body() -> AsyncIterator[bytes]:  # chunked: found out on the way
        for _ in range(32):
            yield b"\0" * 65536

    resp = await client.post("/chatkit/upload/atc_2", data=body(), headers=ORIGIN)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"
    await asyncio.wait_for(probe.ended.wait(), SAFETY)
    assert probe.complete == []  # the backend's request was aborted, not completed
    assert probe.received <= 1 << 20


async def test_finding2_concurrent_uploads_are_capped_per_client(
    gateway: Any, probe: Probe
) -> None:
    client = await gateway(routes=[chat_route(probe.url + "/chatkit", max_uploads_per_client=1)])
    release = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"\0" * (1 << 20)
        await release.wait()

    first = asyncio.create_task(client.post("/chatkit/upload/atc_1", data=slow(), headers=ORIGIN))
    await asyncio.wait_for(probe.first_mib.wait(), SAFETY)
    resp = await client.post("/chatkit/upload/atc_2", data=b"x" * 10, headers=ORIGIN)
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1
    resp = await client.post("/chatkit", json=LIST_REQ, headers=ORIGIN)
    assert resp.status == 404  # not an upload, not counted: the probe's own 404 came back
    release.set()
    async with asyncio.timeout(SAFETY):
        done = await first
        assert done.status == 200
        resp = await client.post("/chatkit/upload/atc_3", data=b"x" * 10, headers=ORIGIN)
    assert resp.status == 200  # the slot came back


# --- 5. What a client says about hops and URLs stays with it ------------------------

SPOOFED = {
    "X-Real-IP": "6.6.6.6",
    "True-Client-IP": "6.6.6.6",
    "CF-Connecting-IP": "6.6.6.6",
    "X-Client-IP": "6.6.6.6",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-Port": "443",
    "X-Forwarded-Prefix": "/admin",
    "X-Forwarded-Server": "evil",
    "X-Original-URL": "/admin",
    "X-Rewrite-URL": "/admin",
    "X-HTTP-Method-Override": "DELETE",
    "Forwarded": "for=6.6.6.6;host=evil.example;proto=https",
    "X_Forwarded_For": "6.6.6.6",
    "X-Real_IP": "6.6.6.6",
    "X-ChatKit-User": "u_someone_else",
}


async def test_finding5_identity_and_routing_headers_are_dropped(
    gateway: Any, backend: Backend
) -> None:
    client, _ = await start(gateway, backend)
    headers = {**ORIGIN, **SPOOFED, "Host": "evil.example", "X-Custom": "kept"}
    resp = await client.post("/chatkit", json=LIST_REQ, headers=headers)
    assert resp.status == 200
    got = {k.lower(): v for k, v in backend.seen[0].headers.items()}
    for name in SPOOFED:
        if name.lower() not in ("x-forwarded-for",):
            assert name.lower() not in got, name
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert "x-forwarded-host" not in got  # no forwarded_host in the policy: not sent
    assert got["x-custom"] == "kept"


async def test_finding5_forwarded_host_comes_from_the_policy(
    gateway: Any, backend: Backend
) -> None:
    route = chat_route(backend.url + "/chatkit", forwarded_host="chat.example.org")
    client = await gateway(routes=[route], server={"trusted_proxies": ["127.0.0.1/32"]})
    headers = {**ORIGIN, "Host": "evil.example", "X-Forwarded-Host": "evil.example"}
    await client.post("/chatkit", json=LIST_REQ, headers=headers)
    got = {k.lower(): v for k, v in backend.seen[0].headers.items()}
    assert got["x-forwarded-host"] == "chat.example.org"  # even from a trusted peer


def test_finding5_forwarded_host_must_be_a_host() -> None:
    route = chat_route("http://127.0.0.1:9/chatkit", forwarded_host="evil.example/\r\nx")
    with pytest.raises(PolicyError) as caught:
        make_policy(routes=[route])
    assert "routes[0].forwarded_host" in str(caught.value)


# --- 6. A client that never reads does not hold a stream -----------------------------


async def test_finding6_a_client_that_never_reads_loses_its_stream(
    gateway: Any, probe: Probe
) -> None:
    route = chat_route(probe.url + "/flood", stream_write_timeout_seconds=1)
    client = await gateway(routes=[route])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", client.port))
    body = json.dumps(create_req()).encode()
    await loop.sock_sendall(sock, post_head("/chatkit", len(body)).encode() + body)
    try:
        # Never read: the gateway's writes stall; at the deadline it hangs up on both.
        await asyncio.wait_for(probe.ended.wait(), SAFETY)
    finally:
        sock.close()


# --- 7. Path forms that some backends normalise into something else ----------------


@pytest.mark.parametrize(
    "path",
    [
        "/chatkit/..;/admin",
        "/chatkit/upload/..;/..;/admin",
        "/chatkit/.;x/upload/a",
        "/chatkit/..;jsessionid=1/admin",
        "/chatkit/%c0%ae%c0%ae/admin",
        "/chatkit/%e0%80%ae%e0%80%ae/admin",
        "/chatkit/%ef%bc%8e%ef%bc%8e/admin",
        "/chatkit/upload%ef%bc%8fx",
        "/chatkit/%u002e%u002e/admin",
        "/chatkit/%ff/x",
    ],
)
async def test_finding7_normalised_traversals_are_refused(
    gateway: Any, backend: Backend, path: str
) -> None:
    client, _ = await start(gateway, backend)
    status, body = await raw_post(client, path)
    assert status in (400, 404), path
    assert json.loads(body)["error"]["code"] in ("bad_request", "not_found")
    assert backend.seen == []


async def test_finding7_ordinary_upload_paths_still_pass(gateway: Any, probe: Probe) -> None:
    client = await gateway(routes=[chat_route(probe.url + "/chatkit")])
    resp = await client.post("/chatkit/upload/atc_ab-C_9.png", data=b"x", headers=ORIGIN)
    assert resp.status == 200


# --- 9. Policy values that would break every request, or leak ----------------------


def test_finding9_header_values_with_line_breaks_are_refused_at_load() -> None:
    route = chat_route("http://127.0.0.1:9/chatkit", upstream_headers={"X-Key": "a\r\nX-Evil: 1"})
    text = policy_yaml(routes=[route])
    with pytest.raises(PolicyError) as caught:
        make_policy(text)
    (problem,) = caught.value.problems
    assert problem.path == "routes[0].upstream_headers.X-Key"
    assert problem.line is not None and problem.line > 0
    assert "line break" in str(problem)


def test_finding9_credentials_in_the_target_url_are_refused_at_load() -> None:
    route = chat_route("http://admin:PASS@127.0.0.1:9/chatkit")
    with pytest.raises(PolicyError) as caught:
        make_policy(routes=[route])
    (problem,) = caught.value.problems
    assert problem.path == "routes[0].target"
    assert "upstream_headers" in str(problem)
    assert "PASS" not in str(caught.value)


# --- 10. Each visitor their own history ---------------------------------------------


@contextlib.asynccontextmanager
async def example_server() -> AsyncIterator[str]:
    runner = web.AppRunner(build_app(None, "", "http://x/chatkit"), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/chatkit"
    finally:
        await runner.cleanup()


async def test_finding10_the_example_server_keeps_visitors_apart(gateway: Any) -> None:
    async with example_server() as target:
        client = await gateway(routes=[chat_route(target)])
        a = {**ORIGIN, "X-Device-Id": DEVICE_A}
        b = {**ORIGIN, "X-Device-Id": DEVICE_B}
        async with client.post("/chatkit", json=create_req("secret of A"), headers=a) as resp:
            assert resp.status == 200
            await resp.read()
        resp = await client.post("/chatkit", json=LIST_REQ, headers=a)
        (thread,) = (await resp.json())["data"]
        resp = await client.post("/chatkit", json=LIST_REQ, headers=b)
        assert (await resp.json())["data"] == []
        items = {"type": "items.list", "params": {"thread_id": thread["id"]}}
        resp = await client.post("/chatkit", json=items, headers=b)
        assert "secret of A" not in await resp.text()
        # B claiming A's user id directly: dropped by the gateway.
        forged = {**b, "X-ChatKit-User": "anything"}
        resp = await client.post("/chatkit", json=LIST_REQ, headers=forged)
        assert (await resp.json())["data"] == []
        # No device id, or one too short to be a secret: no user, nothing served.
        for headers in (ORIGIN, {**ORIGIN, "X-Device-Id": "short"}):
            resp = await client.post("/chatkit", json=LIST_REQ, headers=headers)
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "no_user"


async def test_finding10_the_backend_gets_a_hash_never_the_device_id(
    gateway: Any, backend: Backend
) -> None:
    client, _ = await start(gateway, backend)
    for device in (DEVICE_A, DEVICE_A, DEVICE_B, "short", None):
        headers = {**ORIGIN, **({"X-Device-Id": device} if device else {})}
        await client.post("/chatkit", json=LIST_REQ, headers=headers)
    users = [s.headers.get("X-ChatKit-User") for s in backend.seen]
    assert users[0] == users[1] != users[2]
    assert users[3] is None and users[4] is None  # never made up from the address
    for user in users[:3]:
        assert user is not None and user.startswith("u_") and len(user) == 34
    assert all("X-Device-Id" not in s.headers for s in backend.seen)
    assert all(DEVICE_A not in json.dumps(s.headers) for s in backend.seen)


async def test_finding10_user_from_a_trusted_header(gateway: Any, backend: Backend) -> None:
    route = chat_route(backend.url + "/chatkit", user_id={"source": "header"})
    client = await gateway(routes=[route], server={"trusted_proxies": ["127.0.0.1/32"]})
    await client.post("/chatkit", json=LIST_REQ, headers={**ORIGIN, "X-Authenticated-User": "ann"})
    user = backend.seen[0].headers["X-ChatKit-User"]
    assert user.startswith("u_") and "ann" not in user
    # From an untrusted peer, neither the user nor the claim reaches the backend.
    client = await gateway(routes=[route])
    await client.post("/chatkit", json=LIST_REQ, headers={**ORIGIN, "X-Authenticated-User": "ann"})
    assert "X-ChatKit-User" not in backend.seen[1].headers
    assert "X-Authenticated-User" not in backend.seen[1].headers


# --- SSE answers are never buffered or cached on the way ------------------------------


async def test_sse_answers_carry_no_buffering_and_no_cache(gateway: Any, probe: Probe) -> None:
    client = await gateway(routes=[chat_route(probe.url + "/cached")])
    async with client.post("/chatkit", json=create_req(), headers=ORIGIN) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Accel-Buffering"] == "no"
        assert resp.headers["Cache-Control"] == "no-cache"  # the backend's max-age replaced
        assert "Content-Length" not in resp.headers
        assert b"progress_update" in await resp.read()
