"""Hostile connections, round two, against real `serve` processes (uvloop, the guarded
listeners): one address holding every connection, probes that must not starve, and the
HTTP/1 corners aiohttp would serve — percent-encoded ops paths, HTTP/1.0 with
Transfer-Encoding, versions other than 1.0 and 1.1, `100 Continue` before the checks.

Loopback is a /8: connections from 127.0.0.2 are another client than 127.0.0.1's.
Waits are bounded (a test fails instead of hanging); nothing asserts how long a step took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import ALLOWED, TEST_KEY
from tests.support.processes import Gateway, base_env, free_port, poll, start_gateway, write_policy
from tests.support.rawhttp import Answer, closed_by_peer, read_answer, request_bytes

pytestmark = pytest.mark.slow

SESSION = "/api/chatkit/session"
LOTS = [{"key": "client_ip", "requests": 10**9, "per": "1h"}]
BOUND = 8.0  # seconds any single step may take before the test fails
OTHER = "127.0.0.2"  # another client (loopback)
BODY = b'{"device_id": "dev-1"}'


class Served:
    """A `serve` process: its public port, and its ops port when it has one."""

    def __init__(self, gateway: Gateway, port: int, ops_port: int | None) -> None:
        self.gateway = gateway
        self.port = port
        self.ops_port = ops_port

    def url(self, path: str, *, ops: bool = False) -> str:
        port = self.ops_port if ops else self.port
        assert port is not None
        return f"http://127.0.0.1:{port}{path}"


async def serve(tmp_path: Path, gateways: list[Gateway], **server: Any) -> Served:
    """A `serve` process with one session route answered by the built-in stub."""
    port = free_port()
    route = {
        "name": "site", "path": SESSION, "kind": "chatkit_session", "workflow_id": "wf_test",
        "allowed_origins": [ALLOWED], "rate_limits": LOTS,
    }  # fmt: skip
    config = write_policy(tmp_path / "gateway.yaml", port=port, server=server, routes=[route])
    env = base_env(OPENAI_API_KEY=TEST_KEY)
    ops_port = server.get("ops_port")
    # start_gateway waits for /healthz: on the ops port when there is one.
    gateway = await start_gateway(
        config, ops_port or port, "--stub-upstream", env=env, gateways=gateways
    )
    return Served(gateway, port, ops_port)


@contextlib.asynccontextmanager
async def connection(
    port: int, source: str = "127.0.0.1"
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        yield reader, writer
    finally:
        writer.close()


async def ask(port: int, data: bytes, source: str = "127.0.0.1") -> Answer:
    """One request on a new connection, and its answer."""
    async with connection(port, source) as (reader, writer):
        writer.write(data)
        answer = await read_answer(reader, timeout=BOUND)
    assert answer is not None, data
    return answer


def get(path: str, *headers: tuple[str, str]) -> bytes:
    return request_bytes("GET", path, headers)


def post(path: str = SESSION, body: bytes = b"{}", *headers: tuple[str, str]) -> bytes:
    return request_bytes("POST", path, [("Origin", ALLOWED), *headers], body)


def head(length: int, *lines: str) -> bytes:
    """A session POST's head, its body to follow."""
    all_lines = [f"POST {SESSION} HTTP/1.1", "Host: gateway", f"Origin: {ALLOWED}", *lines]
    return ("\r\n".join([*all_lines, f"Content-Length: {length}"]) + "\r\n\r\n").encode()


def refused(data: bytes) -> None:
    """The whole answer of a connection refused at a cap: 503 JSON, then the close. (The
    caller sends nothing: the refusal is written as the connection opens, and a request
    arriving after the close would make the kernel reset the connection, dropping it.)"""
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 503 "), lines[0]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Connection"] == "close"
    assert json.loads(body)["error"]["code"] == "unavailable"


async def exposition(url: str, source: str = "127.0.0.1") -> str:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    timeout = aiohttp.ClientTimeout(total=BOUND)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
        http.get(url) as resp,
    ):
        assert resp.status == 200
        return await resp.text()


async def metric(url: str, name: str, source: str = "127.0.0.1", **labels: str) -> float:
    text = await exposition(url, source)
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    selector = r"\{" + re.escape(wanted) + r"\}" if labels else ""
    values = re.findall("^" + re.escape(name) + selector + r" (\S+)$", text, re.MULTILINE)
    assert len(values) == 1, (name, labels)
    return float(values[0])


async def busy(port: int, stack: contextlib.AsyncExitStack, count: int) -> list[Any]:
    """`count` slow uploads from 127.0.0.1: a head and part of a body each, in progress."""
    uploads = [await stack.enter_async_context(connection(port)) for _ in range(count)]
    for _, writer in uploads:
        writer.write(head(len(BODY)) + BODY[:5])
        await writer.drain()
    await asyncio.sleep(0.5)  # for the heads to be read (ordering, not timing)
    return uploads


async def finish(uploads: list[Any]) -> None:
    """Each upload in progress, never cut by a cap, gets its answer."""
    for reader, writer in uploads:
        writer.write(BODY[5:])
        answer = await read_answer(reader, timeout=BOUND)
        assert answer is not None and answer.status == 200, answer


# --------------------------------------------------------------------------- finding 3


async def test_one_address_cannot_take_every_connection(tmp_path: Path, gateways: Any) -> None:
    """At `max_connections_per_client` a peer makes room with its own idle connection,
    or is refused (503, closed unread) — while others, probes included, are served."""
    served = await serve(
        tmp_path, gateways, max_connections=16, max_connections_per_client=4,
        body_timeout_seconds=30, body_min_rate_bytes_per_second=1,
        keepalive_timeout_seconds=60,
    )  # fmt: skip
    port = served.port
    async with contextlib.AsyncExitStack() as stack:
        # One kept-alive idle connection and three uploads: 127.0.0.1 is at its cap.
        kept, kept_w = await stack.enter_async_context(connection(port))
        kept_w.write(request_bytes("GET", "/healthz", close=False))
        answer = await read_answer(kept, timeout=BOUND)
        assert answer is not None and answer.status == 200
        uploads = await busy(port, stack, 3)
        # A new connection from it takes the idle one's place...
        assert (await ask(port, get("/healthz"))).status == 200
        assert await closed_by_peer(kept, BOUND) == b""
        uploads += await busy(port, stack, 1)
        # ... and with all four busy, it is refused, unread.
        for _ in range(2):
            async with connection(port) as (reader, _):
                refused(await closed_by_peer(reader, BOUND))
        # Another address is served meanwhile: the probe, and a client.
        assert (await ask(port, get("/healthz"), OTHER)).status == 200
        minted = await ask(port, post(), OTHER)
        assert minted.status == 200 and minted.json()["client_secret"].startswith("ek_stub_")
        await finish(uploads)
    url = served.url("/metrics")
    closed = "chatkit_gateway_connections_closed_total"
    assert await metric(url, closed, reason="refused_per_client") == 2
    assert await metric(url, closed, reason="evicted") >= 1
    assert await metric(url, closed, reason="refused") == 0
    assert (await ask(port, get("/healthz"))).status == 200  # released: served again


async def test_ops_port_serves_probes_and_metrics_that_public_clients_cannot_starve(
    tmp_path: Path, gateways: Any
) -> None:
    """With `ops_port`, /healthz, /readyz and metrics have their own listener and caps,
    and are unknown paths on the public port; the index and OpenAPI stay public."""
    ops_port = free_port()
    served = await serve(
        tmp_path, gateways, ops_port=ops_port, max_connections=4,
        body_timeout_seconds=30, body_min_rate_bytes_per_second=1,
    )  # fmt: skip
    port = served.port
    for path in ("/healthz", "/readyz", "/metrics"):
        public = await ask(port, get(path))
        assert public.status == 404 and public.error_code() == "not_found", path
        assert (await ask(port, request_bytes("POST", path))).status == 404, path
        assert (await ask(ops_port, get(path))).status == 200, path
    index = await ask(port, get("/"))
    assert index.status == 200 and index.json()["ops_port"] == ops_port
    assert (await ask(port, get("/openapi.json"))).status == 200
    # The ops listener serves nothing else: no policy route, no percent-encoded probe.
    for data in (post(), get("/"), get("/openapi.json"), get("/%68ealthz")):
        answer = await ask(ops_port, data)
        assert answer.status == 404 and answer.error_code() == "not_found", data
    wrong = await ask(ops_port, request_bytes("POST", "/healthz"))
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD"
    assert (await ask(port, post())).status == 200

    async with contextlib.AsyncExitStack() as stack:
        uploads = await busy(port, stack, 4)  # every public connection busy
        async with connection(port) as (reader, _):
            refused(await closed_by_peer(reader, BOUND))
        for path in ("/healthz", "/readyz"):
            assert (await ask(ops_port, get(path))).status == 200, path
        url = served.url("/metrics", ops=True)
        closed = "chatkit_gateway_connections_closed_total"
        assert await metric(url, closed, reason="refused") == 1
        await finish(uploads)
    ops = await metric(url, "chatkit_gateway_requests_total", route="ops", status="200")
    assert ops >= 5

    # Draining: /readyz on the ops port turns 503 while /healthz stays 200.
    served.gateway.proc.send_signal(signal.SIGTERM)

    async def not_ready() -> bool:
        return (await ask(ops_port, get("/readyz"))).status == 503

    await poll(not_ready, BOUND, "/readyz 503 on the ops port")
    assert (await ask(ops_port, get("/healthz"))).status == 200
    assert await served.gateway.wait_exit(BOUND) == 0


# --------------------------------------------------------------------------- finding 11


async def test_percent_encoded_ops_paths_are_unknown_paths(tmp_path: Path, gateways: Any) -> None:
    served = await serve(tmp_path, gateways)
    port = served.port
    for path in ("/%6detrics", "/%68ealthz", "/%72eadyz", "/%6fpenapi.json", "/metric%73"):
        for method in ("GET", "POST"):
            answer = await ask(port, request_bytes(method, path))
            assert answer.status == 404, (method, path, answer.status)
            assert answer.error_code() == "not_found"
            assert b"chatkit_gateway" not in answer.body
    # The real paths, with a query or in absolute form, are still theirs.
    for data in (
        get("/metrics"),
        get("/healthz?probe=%41"),
        b"GET http://gateway/healthz HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n",
    ):
        assert (await ask(port, data)).status == 200, data
    wrong = await ask(port, request_bytes("POST", "/healthz"))
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD"


async def test_http_1_0_with_transfer_encoding_is_refused_and_closed(
    tmp_path: Path, gateways: Any
) -> None:
    """RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing."""
    served = await serve(tmp_path, gateways, keepalive_timeout_seconds=30)
    port = served.port
    chunked = (
        f"POST {SESSION} HTTP/1.0\r\nHost: gateway\r\nOrigin: {ALLOWED}\r\n"
        "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    ).encode()
    async with connection(port) as (reader, writer):
        writer.write(chunked + get("/healthz"))  # and a request smuggled behind it
        answer = await read_answer(reader, timeout=BOUND)
        assert answer is not None and answer.status == 400
        assert answer.error_code() == "bad_request"
        assert await closed_by_peer(reader, BOUND) == b""
    # An HTTP/1.0 keep-alive request without it keeps its connection.
    plain = b"GET /healthz HTTP/1.0\r\nHost: gateway\r\nConnection: keep-alive\r\n\r\n"
    async with connection(port) as (reader, writer):
        for _ in range(2):
            writer.write(plain)
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == 200
    url = served.url("/metrics")
    closed = "chatkit_gateway_connections_closed_total"
    assert await metric(url, closed, reason="malformed_request") == 1


async def test_http_major_versions_other_than_1_get_505_and_a_close(
    tmp_path: Path, gateways: Any
) -> None:
    served = await serve(tmp_path, gateways, keepalive_timeout_seconds=30)
    port = served.port
    # 2.0 and 0.9 get through aiohttp's parser (llhttp), which refuses 1.2 and 3.0 itself.
    for version, status, code in (
        ("2.0", 505, "http_version_not_supported"),
        ("0.9", 505, "http_version_not_supported"),
        ("1.2", 400, "bad_request"),
        ("3.0", 400, "bad_request"),
    ):
        async with connection(port) as (reader, writer):
            writer.write(f"GET /healthz HTTP/{version}\r\nHost: gateway\r\n\r\n".encode())
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == status, version
            assert answer.error_code() == code
            assert answer.headers["Server"] == "chatkit-gateway"
            assert await closed_by_peer(reader, BOUND) == b"", version
    # Pipelined behind a good request: that one is answered, then the 505, then the close.
    async with connection(port) as (reader, writer):
        writer.write(
            request_bytes("GET", "/healthz", close=False)
            + f"POST {SESSION} HTTP/2.0\r\nHost: gateway\r\nOrigin: {ALLOWED}\r\n"
            "Content-Length: 2\r\n\r\n{}".encode()
        )
        statuses = []
        for _ in range(2):
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None
            statuses.append(answer.status)
        assert statuses == [200, 505]
        assert await closed_by_peer(reader, BOUND) == b""
    # The HTTP/2.0 session request never reached the route.
    assert 'requests_total{route="site"' not in await exposition(served.url("/metrics"))


def expecting(method: str, path: str, length: int, origin: str = ALLOWED) -> bytes:
    """A head asking for `100 Continue` before its body of `length` bytes."""
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway", f"Origin: {origin}"]
    lines += ["Expect: 100-continue", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_100_continue_only_after_the_checks(tmp_path: Path, gateways: Any) -> None:
    """A refusal is the first answer an `Expect: 100-continue` request gets; an allowed
    one gets its 100 and, after its body, the answer."""
    served = await serve(tmp_path, gateways)
    port = served.port
    for first, data in (
        (403, expecting("POST", SESSION, 2, origin="https://evil.example")),
        (404, expecting("POST", "/nope", 2)),
        (404, expecting("POST", "/%68ealthz", 2)),
        (405, expecting("PUT", SESSION, 2)),
        (413, expecting("POST", SESSION, 10**6)),  # over the route's max_body_bytes
    ):
        async with connection(port) as (reader, writer):
            writer.write(data)  # the head only: the body waits for a 100
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == first, (data, answer)
    # Allowed: 100 Continue, then the body, then the answer.
    async with connection(port) as (reader, writer):
        writer.write(expecting("POST", SESSION, len(BODY)))
        answer = await read_answer(reader, timeout=BOUND)
        assert answer is not None and answer.status == 100
        writer.write(BODY)
        answer = await read_answer(reader, timeout=BOUND)
        assert answer is not None and answer.status == 200
        assert answer.json()["client_secret"].startswith("ek_stub_")
    # Probes read no body: no 100 for them either.
    async with connection(port) as (reader, writer):
        writer.write(expecting("GET", "/healthz", 2))
        answer = await read_answer(reader, timeout=BOUND)
        assert answer is not None and answer.status == 200
