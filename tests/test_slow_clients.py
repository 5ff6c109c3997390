"""Slow and greedy clients against a real `serve` process (uvloop, the guarded listener):
slowloris heads, dripped bodies, idle connections beyond the cap, busy connections at
the cap, pipelining — bounded by the `server:` limits while normal clients are served.

Waits are bounded (a test fails instead of hanging); nothing asserts how long a step took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.web import RequestHandler
from multidict import CIMultiDict

from gateway.http_protocol import GuardedRequestHandler
from tests.conftest import ALLOWED, TEST_KEY
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import Gateway, base_env, free_port, start_gateway, write_policy
from tests.support.rawhttp import Answer, closed_by_peer, read_answer, request_bytes

pytestmark = pytest.mark.slow

SESSION = "/api/chatkit/session"
LOTS = [{"key": "client_ip", "requests": 10**9, "per": "1h"}]
BOUND = 8.0  # seconds any single step may take before the test fails


async def serve(
    tmp_path: Path,
    gateways: list[Gateway],
    *,
    upstream: FakeOpenAI | None = None,
    max_body_bytes: int | None = None,
    **server: Any,
) -> Gateway:
    """A `serve` process with one session route: the built-in stub upstream, or `upstream`."""
    port = free_port()
    route: dict[str, Any] = {
        "name": "site", "path": SESSION, "kind": "chatkit_session", "workflow_id": "wf_test",
        "allowed_origins": [ALLOWED], "rate_limits": LOTS,
    }  # fmt: skip
    if max_body_bytes is not None:
        route["max_body_bytes"] = max_body_bytes
    extra: dict[str, Any] = {}
    if upstream is not None:  # long enough for the delays the tests ask of it
        extra = {"base_url": upstream.base_url, "upstream": {"timeout_seconds": 10}}
    config = write_policy(
        tmp_path / "gateway.yaml", port=port, server=server, routes=[route], **extra
    )
    env = base_env(OPENAI_API_KEY=TEST_KEY)
    stub = () if upstream is not None else ("--stub-upstream",)
    return await start_gateway(config, port, *stub, env=env, gateways=gateways)


def port_of(gateway: Gateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def connection(
    gateway: Gateway,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway))
    try:
        yield reader, writer
    finally:
        writer.close()


async def normal_request(gateway: Gateway) -> None:
    """What a real client sees meanwhile: a minted secret, within the bound."""
    timeout = aiohttp.ClientTimeout(total=BOUND)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{gateway.url}{SESSION}", headers={"Origin": ALLOWED}) as resp,
    ):
        assert resp.status == 200
        assert (await resp.json())["client_secret"].startswith("ek_stub_")


async def metric(gateway: Gateway, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = (
        "^" + re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)$"
    )
    values = [float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE)]
    assert len(values) == 1, (name, labels)
    return values[0]


def head(path: str = SESSION, length: int | None = None, *, close: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", f"Origin: {ALLOWED}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def trickle(writer: asyncio.StreamWriter, pieces: list[bytes], every: float) -> None:
    """Send the pieces one by one; stop quietly when the server has closed on us."""
    with contextlib.suppress(ConnectionError):
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)


def refused_answer(data: bytes, status: int, code: str) -> Answer:
    """A whole answer the gateway wrote before closing (no request object behind it)."""
    head_part, _, body = data.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} "), lines[0]
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Server"] == "chatkit-gateway"
    assert headers["Connection"] == "close"
    assert json.loads(body)["error"]["code"] == code
    return Answer(status, CIMultiDict(headers), body)


async def test_slow_heads_are_cut_at_the_header_timeout(tmp_path: Path, gateways: Any) -> None:
    gateway = await serve(
        tmp_path, gateways, header_timeout_seconds=1, keepalive_timeout_seconds=30
    )
    async with connection(gateway) as (lazy, lazy_w), connection(gateway) as (silent, _):
        # Slowloris: a header line every 200 ms, for ever.
        lines = [head(length=2)[:-2]] + [f"X-Pad-{i}: x\r\n".encode() for i in range(100)]
        task = asyncio.create_task(trickle(lazy_w, lines, 0.2))
        # A kept-alive connection: one request answered, then the next head trickles.
        async with connection(gateway) as (kept, kept_w):
            kept_w.write(head(length=2) + b"{}")
            ok = await read_answer(kept, timeout=BOUND)
            assert ok is not None and ok.status == 200
            again = asyncio.create_task(trickle(kept_w, lines, 0.2))
            for _ in range(3):
                await normal_request(gateway)  # served meanwhile
            late = await read_answer(kept, timeout=BOUND)
            assert late is not None and late.status == 408
            assert late.error_code() == "request_timeout"
            assert await closed_by_peer(kept, BOUND) == b""
            again.cancel()
        answer = await read_answer(lazy, timeout=BOUND)
        assert answer is not None and answer.status == 408
        assert answer.error_code() == "request_timeout"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert await closed_by_peer(lazy, BOUND) == b""
        task.cancel()
        # Connected and said nothing: closed, nothing written.
        assert await closed_by_peer(silent, BOUND) == b""
    assert (
        await metric(gateway, "chatkit_gateway_connections_closed_total", reason="header_timeout")
        >= 3
    )
    await normal_request(gateway)


async def test_slow_bodies_are_cut_and_steady_slow_uploads_are_not(
    tmp_path: Path, gateways: Any
) -> None:
    gateway = await serve(
        tmp_path, gateways, body_timeout_seconds=1, body_min_rate_bytes_per_second=1000
    )
    padded = json.dumps({"device_id": "dev-1", "pad": "a" * 2950}).encode()
    async with (
        connection(gateway) as (drip, drip_w),
        connection(gateway) as (stall, stall_w),
        connection(gateway) as (steady, steady_w),
    ):
        # Drip: 1 byte every 100 ms, far below the minimum rate.
        drip_w.write(head(length=len(padded)))
        dripping = asyncio.create_task(trickle(drip_w, [bytes([b]) for b in padded], 0.1))
        # Stall: half the body, then nothing.
        stall_w.write(head(length=len(padded)) + padded[: len(padded) // 2])
        # Steady: 300 bytes every 150 ms (2 kB/s) for longer than body_timeout_seconds.
        steady_w.write(head(length=len(padded)))
        pieces = [padded[i : i + 300] for i in range(0, len(padded), 300)]
        sending = asyncio.create_task(trickle(steady_w, pieces, 0.15))
        await normal_request(gateway)
        for reader in (drip, stall):
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == 408
            assert answer.error_code() == "request_timeout"
            assert answer.headers["Access-Control-Allow-Origin"] == ALLOWED  # the page may read it
            assert await closed_by_peer(reader, BOUND) == b""
        ok = await read_answer(steady, timeout=BOUND)
        assert ok is not None and ok.status == 200, ok
        await sending
        dripping.cancel()
    assert (
        await metric(gateway, "chatkit_gateway_connections_closed_total", reason="body_timeout")
        == 2
    )
    assert await metric(gateway, "chatkit_gateway_requests_total", route="site", status="408") == 2


async def test_idle_connections_beyond_the_cap_make_room_for_new_clients(
    tmp_path: Path, gateways: Any
) -> None:
    cap = 20
    gateway = await serve(
        tmp_path, gateways, max_connections=cap, header_timeout_seconds=60,
        keepalive_timeout_seconds=60,
    )  # fmt: skip
    opened: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(10):  # kept alive after one request each
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway))
            writer.write(head(length=2) + b"{}")
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == 200
            opened.append((reader, writer))
        for _ in range(3 * cap):  # never send a byte
            opened.append(await asyncio.open_connection("127.0.0.1", port_of(gateway)))
        for _ in range(3):
            await normal_request(gateway)
        evicted = 0
        for reader, _ in opened:
            with contextlib.suppress(TimeoutError):
                if await closed_by_peer(reader, 0.05) == b"":
                    evicted += 1
        # Every connection past the cap pushed out the longest-idle one.
        assert evicted >= len(opened) - cap
        assert await metric(gateway, "chatkit_gateway_open_connections") <= cap
        assert (
            await metric(gateway, "chatkit_gateway_connections_closed_total", reason="evicted")
            >= evicted
        )
    finally:
        for _, writer in opened:
            writer.close()


async def test_at_the_cap_with_every_connection_busy_new_ones_get_503(
    tmp_path: Path, gateways: Any
) -> None:
    gateway = await serve(
        tmp_path, gateways, max_connections=3, body_timeout_seconds=30,
        body_min_rate_bytes_per_second=1,
    )  # fmt: skip
    body = b'{"device_id": "dev-1"}'
    async with contextlib.AsyncExitStack() as stack:
        busy = [await stack.enter_async_context(connection(gateway)) for _ in range(3)]
        for _, writer in busy:  # a head and half a body: a request in progress
            writer.write(head(length=len(body)) + body[:5])
            await writer.drain()
        await asyncio.sleep(0.5)  # for the heads to be read (ordering, not timing)
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gateway))
            refused_answer(await closed_by_peer(reader, BOUND), 503, "unavailable")
            writer.close()
        # The cap never cuts a request in progress: each still gets its answer.
        for reader, writer in busy:
            writer.write(body[5:])
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == 200
    await normal_request(gateway)
    assert await metric(gateway, "chatkit_gateway_connections_closed_total", reason="refused") == 2


async def test_pipelined_requests_and_broken_http(tmp_path: Path, gateways: Any) -> None:
    gateway = await serve(tmp_path, gateways, keepalive_timeout_seconds=2)
    async with connection(gateway) as (reader, writer):
        # Three requests in one write, and the start of a fourth that never ends.
        writer.write(
            request_bytes("GET", "/healthz", close=False)
            + head(length=2) + b"{}"
            + request_bytes("GET", "/nope", close=False)
            + b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        )  # fmt: skip
        statuses = []
        for _ in range(3):
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None
            statuses.append(answer.status)
        assert statuses == [200, 200, 404]
        # The stalled fourth head arrived with the others: keep-alive's timer ends it.
        assert await closed_by_peer(reader, BOUND) == b""
    for garbage in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nX: \x00\r\n\r\n",
    ):
        async with connection(gateway) as (reader, writer):
            writer.write(garbage)
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == 400
            assert answer.error_code() == "bad_request"
            assert answer.headers["Server"] == "chatkit-gateway"
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert (
        await metric(
            gateway, "chatkit_gateway_connections_closed_total", reason="malformed_request"
        )
        == 2
    )
    await normal_request(gateway)


# The tests below pin the aiohttp internals gateway/http_protocol.py relies on (listed once,
# in its AIOHTTP_PRIVATE): each fails if an aiohttp release changes what one of them means.


async def test_time_the_gateway_stops_reading_is_not_held_against_the_client(
    tmp_path: Path, gateways: Any, fake_openai: FakeOpenAI
) -> None:
    """A body waits behind a slow request on its connection, unread: aiohttp has paused
    reading, so the body deadline waits too (`_reading_paused`: the body buffered past its
    high-water mark; `_buffer_paused`: the queue of pipelined requests full)."""
    gateway = await serve(
        tmp_path, gateways, upstream=fake_openai, max_body_bytes=1 << 20,
        body_timeout_seconds=1, body_min_rate_bytes_per_second=1000,
    )  # fmt: skip
    fake_openai.delay_next(3.0, times=2)  # each connection's first request: well past 1 s
    first = head(length=2) + b"{}"
    big = json.dumps({"device_id": "dev-1", "pad": "a" * 600_000}).encode()
    small = json.dumps({"device_id": "dev-1", "pad": "a" * 2000}).encode()
    async with (
        connection(gateway) as (buffered, buffered_w),
        connection(gateway) as (
            queued,
            queued_w,
        ),
    ):
        # A body far past the read buffer's high-water mark, at full speed, behind the
        # slow first request: aiohttp reads some, then stops until a handler reads it.
        buffered_w.write(first + head(length=len(big)) + big)
        # 30 more requests behind the slow one fill the queue (32 in 3.14.5) with the
        # head of a 32nd, part of its body with it; the rest comes once reading stopped.
        fill = request_bytes("GET", "/healthz", close=False) * 30
        queued_w.write(first + fill + head(length=len(small)) + small[:1000])
        await queued_w.drain()
        await asyncio.sleep(0.5)  # for that to be read (ordering, not timing)
        queued_w.write(small[1000:])
        sending = asyncio.create_task(buffered_w.drain())
        for reader, count in ((buffered, 2), (queued, 32)):
            statuses = []
            for _ in range(count):
                answer = await read_answer(reader, timeout=BOUND)
                assert answer is not None
                statuses.append(answer.status)
            assert statuses == [200] * count
        await sending
    assert (
        await metric(gateway, "chatkit_gateway_connections_closed_total", reason="body_timeout")
        == 0
    )


async def test_a_head_stalled_behind_a_request_in_progress_closes_the_connection_after_it(
    tmp_path: Path, gateways: Any, fake_openai: FakeOpenAI
) -> None:
    """The next head trickles in while a request is being answered: at the header timeout
    the connection is closed (`close()`: `_close`) after that answer, and what the client
    sends meanwhile is ignored, not taken for yet another head to time."""
    gateway = await serve(
        tmp_path, gateways, upstream=fake_openai, header_timeout_seconds=1,
        keepalive_timeout_seconds=30,
    )  # fmt: skip
    fake_openai.delay_next(3.0)
    lines = [head(length=2)[:-2]] + [f"X-Pad-{i}: x\r\n".encode() for i in range(100)]
    async with connection(gateway) as (reader, writer):
        writer.write(head(length=2) + b"{}")
        await writer.drain()
        while not fake_openai.received:  # the first request is in progress (upstream)
            await asyncio.sleep(0.02)
        dripping = asyncio.create_task(trickle(writer, lines, 0.1))
        answer = await read_answer(reader, timeout=BOUND)
        assert answer is not None and answer.status == 200  # the request in progress
        assert await closed_by_peer(reader, BOUND) == b""  # and no 408 for the stalled head
        dripping.cancel()
    assert (
        await metric(gateway, "chatkit_gateway_connections_closed_total", reason="header_timeout")
        == 1
    )


async def test_at_the_cap_a_kept_alive_connection_between_requests_gives_way(
    tmp_path: Path, gateways: Any
) -> None:
    """Answered, a kept-alive connection is idle again (the finish_response hook), so at the
    cap a new client takes its place instead of being refused."""
    gateway = await serve(
        tmp_path, gateways, max_connections=2, body_timeout_seconds=30,
        body_min_rate_bytes_per_second=1, keepalive_timeout_seconds=60,
    )  # fmt: skip
    body = b'{"device_id": "dev-1"}'
    async with connection(gateway) as (kept, kept_w), connection(gateway) as (busy, busy_w):
        kept_w.write(head(length=2) + b"{}")
        answer = await read_answer(kept, timeout=BOUND)
        assert answer is not None and answer.status == 200
        busy_w.write(head(length=len(body)) + body[:5])  # a request in progress
        await busy_w.drain()
        await asyncio.sleep(0.5)  # for the head to be read (ordering, not timing)
        await normal_request(gateway)  # in the kept-alive connection's place
        assert await closed_by_peer(kept, BOUND) == b""
        busy_w.write(body[5:])
        answer = await read_answer(busy, timeout=BOUND)
        assert answer is not None and answer.status == 200
    assert await metric(gateway, "chatkit_gateway_connections_closed_total", reason="evicted") == 1
    assert await metric(gateway, "chatkit_gateway_connections_closed_total", reason="refused") == 0


async def test_heads_and_request_lines_over_max_header_bytes_get_400_json(
    tmp_path: Path, gateways: Any
) -> None:
    """`max_header_bytes` reaches aiohttp's parser through the handler's constructor
    (aiohttp's own default, 8190, would let these through)."""
    gateway = await serve(tmp_path, gateways, max_header_bytes=2048)
    fits = request_bytes("GET", "/healthz", [("X-Pad", "a" * 1500)])
    for request in (
        request_bytes("GET", "/healthz", [("X-Pad", "a" * 3000)]),
        request_bytes("GET", "/healthz?" + "a" * 3000),
    ):
        async with connection(gateway) as (reader, writer):
            writer.write(request)
            answer = await read_answer(reader, timeout=BOUND)
            assert answer is not None and answer.status == 400
            assert answer.error_code() == "bad_request"
            assert answer.headers["Server"] == "chatkit-gateway"
    async with connection(gateway) as (reader, writer):
        writer.write(fits)
        answer = await read_answer(reader, timeout=BOUND)
        assert answer is not None and answer.status == 200
    assert (
        await metric(
            gateway, "chatkit_gateway_connections_closed_total", reason="malformed_request"
        )
        == 2
    )


def test_guarded_handler_slots_do_not_shadow_aiohttps() -> None:
    """GuardedRequestHandler's own `_`-names must not be names aiohttp's handler uses."""
    theirs = {
        name
        for cls in RequestHandler.__mro__
        for name in (*getattr(cls, "__slots__", ()), *vars(cls))
    }
    assert not set(GuardedRequestHandler.__slots__) & theirs
