"""Hostile input: fuzzed headers, bodies, methods and paths; floods; leaks; security headers.

The properties run against the stack `serve` runs — create_app behind the guarded
listener of gateway/listener.py — in this process, in front of the fake OpenAI and a
healthy fake ChatKit server, so any 5xx is the gateway's own. Requests go over raw
sockets (CR/LF in header values, garbage request lines, odd percent-encoding), which no
client library would send. Hypothesis runs in a worker thread and hands each request to
the test's event loop, where the gateway serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import ipaddress
import json
import re
import string
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.limiter_memory import LIMIT, _ips, measure_limiter_memory
from gateway import cli
from gateway.app import create_app
from gateway.clientip import ClientIPResolver
from gateway.limits import Bucket, Limiter, MemoryStorage, route_limits
from gateway.listener import open_listener
from gateway.metrics import Metrics
from gateway.policy import Policy
from tests.conftest import ALLOWED, TEST_KEY, LogCapture, make_policy
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import SCRIPT, base_env
from tests.support.rawhttp import SANE_ID, Answer, exchange, request_bytes
from tests.test_policy import SHIPPED_LINES, mutate, mutation

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

T = TypeVar("T")

SESSION = "/api/chatkit/session"
REALTIME = "/api/realtime/secret"
CHAT = "/chatkit"
LOTS = {"key": "client_ip", "requests": 10**9, "per": "1h"}
CHATKIT_LIST = b'{"type": "threads.list", "params": {}}'


def routes(backend_url: str, *, limit: dict[str, Any] = LOTS) -> list[dict[str, Any]]:
    common = {"allowed_origins": [ALLOWED], "rate_limits": [limit]}
    return [
        {"name": "site", "path": SESSION, "kind": "chatkit_session", "workflow_id": "wf_test",
         **common},
        {"name": "voice", "path": REALTIME, "kind": "realtime_client_secret", **common},
        {"name": "chat", "path": CHAT, "kind": "chatkit_proxy", "target": backend_url, **common},
    ]  # fmt: skip


async def backend_answer(request: web.Request) -> web.StreamResponse:
    """A healthy ChatKit server: every request read whole and answered 200."""
    await request.read()
    return web.json_response({"data": [], "has_more": False})


@dataclass
class Stack:
    port: int
    metrics: Metrics
    fake: FakeOpenAI
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """From the hypothesis thread: run on the loop where the gateway serves."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)


@contextlib.asynccontextmanager
async def serving(policy: Policy, metrics: Metrics) -> AsyncIterator[int]:
    """The app behind the listener `serve` uses, on a free port."""
    runner, site = await open_listener(
        create_app(policy, metrics=metrics), "127.0.0.1", 0, shutdown_timeout=1
    )
    try:
        yield site.port
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def chatkit_backend() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", backend_answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/chatkit"))
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def stack_for(
    fake: FakeOpenAI, *, limit: dict[str, Any] = LOTS, **policy: Any
) -> AsyncIterator[Stack]:
    metrics = Metrics()
    async with chatkit_backend() as backend:
        policy.setdefault("routes", routes(backend, limit=limit))
        async with serving(make_policy(base_url=fake.base_url, **policy), metrics) as port:
            yield Stack(port, metrics, fake, asyncio.get_running_loop())


@pytest.fixture
async def stack(fake_openai: FakeOpenAI) -> AsyncIterator[Stack]:
    """Trusting loopback as a proxy, so that X-Forwarded-For is parsed, not ignored."""
    async with stack_for(fake_openai, server={"trusted_proxies": ["127.0.0.0/8", "::1/128"]}) as s:
        yield s


async def in_thread(test: Callable[[], None]) -> None:
    await asyncio.to_thread(test)


FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found: no shrinking
    suppress_health_check=list(HealthCheck),
)


def check_answer(answer: Answer | None, *, method: str = "POST") -> Answer:
    """What every answer to anything must be: not a 5xx, JSON errors, the usual headers."""
    assert answer is not None, "connection closed without an answer"
    assert answer.status < 500, answer
    assert answer.headers.get("X-Content-Type-Options") == "nosniff", answer
    assert answer.headers.get("Server") == "chatkit-gateway", answer
    assert SANE_ID.fullmatch(answer.headers.get("X-Request-ID", "")), answer
    banner = " ".join(f"{k}: {v}" for k, v in answer.headers.items()).lower()
    assert "aiohttp" not in banner and "python" not in banner, answer
    if answer.status >= 400 and method != "HEAD":
        answer.error_code()
    return answer


def no_error_logs(logs: LogCapture) -> None:
    bad = [line for line in logs.lines if '"level":"error"' in line or "Traceback" in line]
    assert not bad, bad[:5]


async def assert_still_serving(port: int) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{port}"
        async with http.get(f"{url}/healthz") as resp:
            assert resp.status == 200
        async with http.post(f"{url}{SESSION}", headers={"Origin": ALLOWED}) as resp:
            assert resp.status == 200
            assert (await resp.json())["client_secret"].startswith("ek_")


# --- property: headers ----------------------------------------------------------------------

TEXT = st.text(max_size=60)
HOP = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.tuples(st.ip_addresses(v=4), st.integers(0, 99999)).map(lambda t: f"{t[0]}:{t[1]}"),
    st.tuples(st.ip_addresses(v=6), st.integers(0, 99999)).map(lambda t: f"[{t[0]}]:{t[1]}"),
    st.sampled_from(
        [
            "unknown",
            "_hidden",
            "",
            "::ffff:1.2.3.4",
            "fe80::1%eth0",
            "[::1",
            "1.2.3.4:",
            "1.2.3.4.5",
            "999.1.1.1",
            "0x7f.1",
            "localhost",
            "127.0.0.1",
            "::1",
            "[]",
            ":::",
        ]
    ),
    TEXT,
)
FORWARDED_FOR = st.lists(st.lists(HOP, max_size=10).map(", ".join), max_size=3)
ORIGIN = st.one_of(
    st.just(ALLOWED),
    st.sampled_from(
        [
            "null",
            "",
            "https://example.org.evil.com",
            "HTTPS://EXAMPLE.ORG",
            "https://example.org/",
            "https://example.org:443",
            "http://example.org",
            "https://user@example.org",
            "*",
        ]
    ),
    st.text(max_size=300),
    st.binary(max_size=100),
)
INJECTED = st.sampled_from(
    ["\r\n", "\n", "\r", "\x00", "\r\nSet-Cookie: a=b", "\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", "\x7f"]
)
REQUEST_ID = st.one_of(
    st.from_regex(SANE_ID, fullmatch=True),
    st.integers(129, 10 * 1024).map(lambda n: "r" * n),  # 10 KB: over the header size cap
    st.tuples(TEXT, INJECTED, TEXT).map("".join),  # CR/LF, NUL: header injection attempts
    st.text(max_size=200),
)
TARGET = st.sampled_from(
    [("POST", SESSION, b"{}"), ("POST", REALTIME, b""), ("POST", CHAT, CHATKIT_LIST),
     ("GET", "/healthz", b""), ("OPTIONS", SESSION, b""), ("GET", "/nope", b"")]
)  # fmt: skip


async def test_hostile_headers_never_break_the_gateway(stack: Stack, json_logs: LogCapture) -> None:
    @FUZZ
    @given(
        target=TARGET,
        origin=st.none() | ORIGIN,
        forwarded=FORWARDED_FOR,
        request_id=st.none() | REQUEST_ID,
        extra=st.lists(st.tuples(st.sampled_from(["User-Agent", "Cookie", "X-Real-IP"]), TEXT)),
    )
    def fuzz(
        target: tuple[str, str, bytes],
        origin: str | bytes | None,
        forwarded: list[str],
        request_id: str | None,
        extra: list[tuple[str, str]],
    ) -> None:
        method, path, body = target
        headers: list[tuple[str, str | bytes]] = [("X-Forwarded-For", f) for f in forwarded]
        if origin is not None:
            headers.append(("Origin", origin))
        if request_id is not None:
            headers.append(("X-Request-ID", request_id))
        headers += extra
        answer = check_answer(
            stack.run(exchange(stack.port, request_bytes(method, path, headers, body)))
        )
        if request_id is not None and SANE_ID.fullmatch(request_id) and answer.status != 400:
            assert answer.headers["X-Request-ID"] == request_id

    await in_thread(fuzz)
    await assert_still_serving(stack.port)
    no_error_logs(json_logs)


# --- property: bodies -----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)
FIELDS = st.sampled_from(["device_id", "type", "params", "workflow", "user", "model", "session"])
NASTY_BODIES = [
    b'{"device_id": 1e999999}', b'{"device_id": -1e999999}', b'{"device_id": NaN}',
    b'{"device_id": Infinity}', b'{"device_id": ' + b"9" * 5000 + b"}",
    b'{"type": ' + b"1" * 4400 + b"}", b'{"type": 1e999999, "params": []}', b"\xef\xbb\xbf{}",
    b'{"device_id": "\\ud800"}', b'{"device_id": "' + b"a" * 129 + b'"}', b'{"a": 1, "a": 2}',
    b'{"type": "threads.create"', b"\x00", b"null", b"[]", b'"x"', b"0", b"\xff\xfe\x00{",
    b'{"type": "threads.list", "params": {"limit": -1e308}}',
]  # fmt: skip
BODY = st.one_of(
    st.binary(max_size=2000),  # mostly invalid UTF-8
    JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(FIELDS, JSON, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 20_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.integers(1, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.sampled_from(NASTY_BODIES),
)
CONTENT_TYPE = st.sampled_from(
    [None, "application/json", "text/plain", "application/json; charset=latin-1",
     "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "garbage/"]
)  # fmt: skip


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, rest = [], body
    for size in sizes:
        chunk, rest = rest[:size], rest[size:]
        if chunk:
            out.append(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    if rest:
        out.append(f"{len(rest):x}\r\n".encode() + rest + b"\r\n")
    return b"".join(out) + b"0\r\n\r\n"


async def test_hostile_bodies_never_break_the_gateway(stack: Stack, json_logs: LogCapture) -> None:
    @FUZZ
    @given(
        path=st.sampled_from([SESSION, REALTIME, CHAT, CHAT + "/uploads/a1"]),
        body=BODY,
        content_type=CONTENT_TYPE,
        chunks=st.none() | st.lists(st.integers(1, 4096), max_size=8),
    )
    def fuzz(path: str, body: bytes, content_type: str | None, chunks: list[int] | None) -> None:
        headers: list[tuple[str, str | bytes]] = [("Origin", ALLOWED)]
        if content_type:
            headers.append(("Content-Type", content_type))
        if chunks is None:
            data = request_bytes("POST", path, headers, body)
        else:
            headers.append(("Transfer-Encoding", "chunked"))
            data = request_bytes("GET", path, headers).replace(b"GET ", b"POST ", 1)
            data += chunked(body, chunks)
        check_answer(stack.run(exchange(stack.port, data)))

    await in_thread(fuzz)
    await assert_still_serving(stack.port)
    no_error_logs(json_logs)


@pytest.mark.parametrize(
    ("body", "session", "chat"),
    [
        (b"[" * 100_000, 413, 400),  # token routes refuse the size first (16 KiB)
        (b"[" * 100_000 + b"]" * 100_000, 413, 400),  # the proxy (10 MiB) parses, refuses
        (b'{"type": 1' + b"0" * 100_000 + b"}", 413, 400),  # 10**100000
        (b'{"device_id": 1e999999}', 400, 200),  # no ChatKit type: the backend's call
        (b'{"type": "threads.list", "params": {"n": 1e999999}}', 200, 200),  # inf: passed on
    ],
    ids=["100k-open", "100k-nested", "10**100000", "1e999999-device", "1e999999-param"],
)
async def test_pathological_json(stack: Stack, body: bytes, session: int, chat: int) -> None:
    for path, expected in ((SESSION, session), (CHAT, chat)):
        data = request_bytes("POST", path, [("Origin", ALLOWED)], body)
        answer = check_answer(await exchange(stack.port, data))
        assert answer.status == expected, (path, answer)
    await assert_still_serving(stack.port)


# --- property: methods and paths ------------------------------------------------------------

PCT = st.one_of(
    st.integers(0, 255).map(lambda b: f"%{b:02X}"),
    st.sampled_from(["%", "%z", "%zz", "%2e%2e", "%2F", "%00", "%C0%AE", "%E2%80%AE", "%ff%fe",
                     "%252e", "%u002e"]),
)  # fmt: skip
PCHAR = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
SEGMENT = st.lists(
    st.one_of(PCT, st.text(PCHAR, max_size=10), st.sampled_from(["..", ".", "", "é", "\\", "\t"])),
    max_size=6,
).map("".join)
KNOWN = ["", SESSION, REALTIME, CHAT, "/healthz", "/readyz", "/metrics", "/openapi.json"]
PATH = st.one_of(
    st.tuples(st.sampled_from(KNOWN), st.lists(SEGMENT, max_size=6)).map(
        lambda t: (t[0] + "".join("/" + s for s in t[1])) or "/"
    ),
    st.tuples(st.sampled_from(KNOWN), st.text(PCHAR + "%/?#[]", max_size=40)).map(
        lambda t: f"{t[0] or '/'}?{t[1]}"
    ),
    st.integers(100, 9000).map(lambda n: "/" + "a" * n),  # around the request-line cap
    st.sampled_from(["*", "http://evil.example/healthz", "//chatkit", "/chatkit//x",
                     "/CHATKIT", "/chatkit/../healthz", "/chatkit/%2e%2e/x"]),
)  # fmt: skip
METHOD = st.one_of(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE",
                     "PROPFIND", "get", "FOO", "M-SEARCH"]),
    st.from_regex(r"[A-Z]{1,12}", fullmatch=True),
)  # fmt: skip


async def test_hostile_methods_and_paths_never_break_the_gateway(
    stack: Stack, json_logs: LogCapture
) -> None:
    @FUZZ
    @given(method=METHOD, path=PATH, body=st.sampled_from([b"", b"{}", CHATKIT_LIST]))
    def fuzz(method: str, path: str, body: bytes) -> None:
        data = request_bytes(method, path, [("Origin", ALLOWED)], body)
        head_only = method == "HEAD"
        answer = stack.run(exchange(stack.port, data, head_only=head_only))
        check_answer(answer, method=method)

    await in_thread(fuzz)
    await assert_still_serving(stack.port)
    no_error_logs(json_logs)


async def test_malformed_http_is_json_without_a_banner(stack: Stack) -> None:
    """aiohttp's own answers to broken HTTP are text/plain with its version and pieces of
    the request; the gateway's are JSON with the usual headers, and echo nothing."""
    secret_header = b"Authorization: Bearer client-token-" + b"s" * 9000
    for data in (
        b"GARBAGE\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64,  # TLS to the HTTP port
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + secret_header + b"\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /chatkit HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"POST /chatkit HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST /chatkit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-ID: a\rb\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\n\r\n",
    ):
        answer = check_answer(await exchange(stack.port, data))
        assert answer.status == 400
        assert answer.error_code() == "bad_request"
        assert b"client-token" not in answer.body and b"aaaa" not in answer.body
    await assert_still_serving(stack.port)


# --- security headers -----------------------------------------------------------------------


async def test_every_kind_of_answer_carries_the_security_headers(stack: Stack) -> None:
    cases = [
        ("POST", SESSION, [("Origin", ALLOWED)], b"{}", 200),
        ("POST", REALTIME, [("Origin", ALLOWED)], b"", 200),
        ("POST", CHAT, [("Origin", ALLOWED)], CHATKIT_LIST, 200),
        ("OPTIONS", SESSION, [("Origin", ALLOWED)], b"", 204),
        ("POST", SESSION, [("Origin", "https://evil.example")], b"{}", 403),
        ("POST", SESSION, [("Origin", ALLOWED)], b"[1]", 400),
        ("POST", SESSION, [("Origin", ALLOWED)], b"x" * 20_000, 413),
        ("GET", SESSION, [("Origin", ALLOWED)], b"", 405),
        ("GET", "/wp-login.php", [], b"", 404),
        ("POST", "/healthz", [], b"", 405),
        ("GET", "/healthz", [], b"", 200),
        ("GET", "/readyz", [], b"", 200),
        ("GET", "/metrics", [], b"", 200),
        ("GET", "/openapi.json", [("Origin", "https://docs.example")], b"", 200),
    ]
    for method, path, headers, body, status in cases:
        answer = check_answer(
            await exchange(stack.port, request_bytes(method, path, headers, body))
        )
        assert answer.status == status, (method, path, answer)
        if path in (SESSION, REALTIME) and status == 200:
            assert answer.headers["Cache-Control"] == "no-store"
            assert answer.headers["Pragma"] == "no-cache"


# --- floods ---------------------------------------------------------------------------------


def test_100k_spoofed_forwarded_for_values_from_an_untrusted_peer_are_one_bucket() -> None:
    policy = make_policy(server={"trusted_proxies": ["10.0.0.0/8"]})
    route = policy.routes[0]
    resolver = ClientIPResolver.from_config(policy.server)
    storage = MemoryStorage(max_keys=1_000_000)
    peer = "203.0.113.7"
    seen = set()
    for i in range(100_000):
        spoofed = [f"{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}.1, 10.0.0.{i & 255}"]
        client = resolver.resolve(peer, spoofed)
        seen.add(client)
        buckets = Limiter.buckets(route_limits(route), client, ALLOWED, None)
        storage.acquire_now(buckets)
    assert seen == {peer}
    assert storage.tracked_keys() == 1


async def test_spoofed_forwarded_for_over_http_spends_one_bucket(fake_openai: FakeOpenAI) -> None:
    limit = {"key": "client_ip", "requests": 5, "per": "1h"}
    async with stack_for(fake_openai, limit=limit) as s:
        statuses = []
        for i in range(40):
            headers = [("Origin", ALLOWED), ("X-Forwarded-For", f"198.51.{i // 250}.{i % 250}")]
            answer = await exchange(s.port, request_bytes("POST", SESSION, headers, b"{}"))
            statuses.append(check_answer(answer).status)
        assert statuses == [200] * 5 + [429] * 35
        limited = s.metrics.registry.get_sample_value(
            "chatkit_gateway_rate_limited_total", {"route": "site", "key": "client_ip"}
        )
        assert limited == 35


def series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


async def test_floods_of_origins_paths_and_addresses_add_no_metric_series(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession() as http:

        async def scrape() -> set[str]:
            async with http.get(f"{stack.url}/metrics") as resp:
                return series(await resp.text())

        async def post(path: str, origin: str, forwarded: str) -> None:
            headers = {"Origin": origin, "X-Forwarded-For": forwarded, "User-Agent": origin}
            async with http.post(f"{stack.url}{path}", headers=headers, data=b"{}") as resp:
                assert resp.status in (403, 404)

        await post(SESSION, "https://warm-up.example", "192.0.2.1")
        await post("/warm-up", "https://warm-up.example", "192.0.2.1")
        await scrape()  # the scrape's own series (route="ops")
        before = await scrape()
        for batch in range(20):
            await asyncio.gather(
                *(
                    post(SESSION, f"https://site-{batch}-{i}.example", f"192.0.2.{i}")
                    for i in range(50)
                ),
                *(post(f"/scan/{batch}/{i}", ALLOWED, f"2001:db8::{i:x}") for i in range(10)),
            )
        after = await scrape()
    assert after == before, after ^ before
    rejected = stack.metrics.registry.get_sample_value(
        "chatkit_gateway_origin_rejected_total", {"route": "site"}
    )
    assert rejected == 1 + 1000


def test_a_million_client_ips_keep_the_memory_limiter_within_its_bound() -> None:
    """MemoryStorage(max_keys) tracks at most max_keys clients per limit, and its memory
    is what that many clients cost (bytes per client measured by bench/limiter_memory.py)."""
    max_keys = 20_000
    per_client = measure_limiter_memory(clients=max_keys, bounded_max=1_000)["bytes_per_client"]
    storage = MemoryStorage(max_keys=max_keys)
    clients = 1_000_000
    traced_from = clients - 2 * max_keys  # both generations rebuilt while traced
    acquire = storage.acquire_now
    gc.collect()
    for i, ip in enumerate(_ips(clients)):
        if i == traced_from:
            assert storage.tracked_keys() <= max_keys
            tracemalloc.start()
        acquire([Bucket("site", LIMIT, ip)])
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert storage.tracked_keys() <= max_keys
    assert held <= 1.5 * per_client * max_keys, (held, per_client)


# --- leaks ----------------------------------------------------------------------------------


async def test_no_key_secret_or_authorization_in_any_log_line_or_answer(
    fake_openai: FakeOpenAI, json_logs: LogCapture
) -> None:
    """One scenario through every outcome; then every log line and every answer is searched."""
    client_token = "client-bearer-token-7f3a9c"
    auth = ("Authorization", f"Bearer {client_token}")
    tight = {"key": "client_ip", "requests": 30, "per": "1h"}
    upstream = {"timeout_seconds": 0.3, "retries": 1}
    answers: list[Answer] = []
    secrets: list[str] = []
    async with stack_for(fake_openai, limit=tight, upstream=upstream) as s:

        async def send(method: str, path: str, body: bytes = b"{}", **extra: str) -> Answer:
            headers: list[tuple[str, str | bytes]] = [("Origin", ALLOWED), auth, *extra.items()]
            answer = await exchange(s.port, request_bytes(method, path, headers, body))
            assert answer is not None
            answers.append(answer)
            return answer

        for path in (SESSION, REALTIME):
            ok = await send("POST", path, b'{"device_id": "device-1"}')
            assert ok.status == 200
            secrets.append(ok.json()["client_secret"])
        leaky = {"error": {"message": f"Incorrect API key provided: {TEST_KEY}.",
                           "type": "invalid_request_error", "param": None,
                           "code": "invalid_api_key"}}  # fmt: skip
        fake_openai.fail_next(401, body=leaky)
        fake_openai.fail_next(403, body=leaky)
        fake_openai.fail_next(429, headers={"Retry-After": "7"})
        fake_openai.fail_next(404)
        fake_openai.fail_next(400, body=leaky)
        fake_openai.fail_next(500, times=2, text=f"<html>{TEST_KEY}</html>")
        for expected in (502, 502, 429, 502, 502, 502):
            assert (await send("POST", SESSION)).status == expected
        fake_openai.delay_next(1.0)
        assert (await send("POST", REALTIME)).status == 504
        fake_openai.drop_next(times=2)
        assert (await send("POST", REALTIME)).status == 502
        assert (await send("POST", SESSION, b"{nope")).status == 400
        assert (await send("POST", SESSION, b"x" * 20_000)).status == 413
        assert (await send("GET", SESSION)).status == 405
        assert (await send("POST", "/nope")).status == 404
        assert (await send("POST", CHAT, CHATKIT_LIST)).status == 200
        bad_origin = [("Origin", "https://evil.example"), auth]
        answers.append(
            check_answer(await exchange(s.port, request_bytes("POST", SESSION, bad_origin)))
        )
        spent = [(await send("POST", SESSION)).status for _ in range(30)]
        assert spent[-1] == 429, spent  # the route's own limit, exhausted
        malformed = b"GET / HTTP/1.1\r\nAuthorization: Bearer " + client_token.encode() * 500
        answers.append(check_answer(await exchange(s.port, malformed + b"\r\n\r\n")))
    statuses = {a.status for a in answers}
    assert statuses >= {200, 400, 403, 404, 405, 413, 429, 502, 504}, statuses
    forbidden = [TEST_KEY, TEST_KEY[3:], client_token, *secrets]
    for line in json_logs.lines:
        for value in forbidden:
            assert value not in line, line
    for answer in answers:
        text = answer.body.decode("utf-8", "replace") + str(dict(answer.headers))
        for value in [TEST_KEY, TEST_KEY[3:], client_token]:
            assert value not in text, answer
        minted = answer.json().get("client_secret") if answer.status == 200 else None
        for secret in secrets:
            assert secret not in text or secret == minted, answer


# --- policy fuzzing through the command line ------------------------------------------------

PROBLEM_LINE = re.compile(r"^[^:\n]+:\d+: \S+: .+$")


@settings(max_examples=60, deadline=None, database=None, phases=[Phase.explicit, Phase.generate])
@given(ops=st.lists(mutation, min_size=1, max_size=4), with_key=st.booleans())
def test_check_on_mutated_policies_ends_in_a_report_never_a_traceback(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[object, ...]], with_key: bool
) -> None:
    lines = list(SHIPPED_LINES)
    for op in ops:
        mutate(lines, op)
    path = tmp_path_factory.mktemp("policy") / "gateway.yaml"
    path.write_text("\n".join(lines) + "\n")
    out, err = io.StringIO(), io.StringIO()
    env = {"OPENAI_API_KEY": TEST_KEY} if with_key else {}
    with (
        pytest.MonkeyPatch.context() as mp,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        for name in ("OPENAI_API_KEY", "CHATKIT_WORKFLOW_ID"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        code = cli.main(["check", "--config", str(path)])
    if code == 0:
        assert out.getvalue().strip()
        warnings = err.getvalue().splitlines()
        assert all(w.startswith(f"{path}: warning: ") for w in warnings), warnings
    else:
        assert code == 1
        problems = err.getvalue().splitlines()
        assert problems and all(PROBLEM_LINE.match(p) for p in problems), problems
        assert all(p.startswith(f"{path}:") for p in problems), problems


def test_check_process_on_hostile_files_reports_lines(tmp_path: Path) -> None:
    import subprocess

    bomb = ["      a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"      {chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]"
        for i in range(8)
    ]
    files = {
        "binary.yaml": bytes(range(256)) * 4,
        "deep.yaml": b"server: " + b"[" * 50_000 + b"]" * 50_000 + b"\n",
        "bomb.yaml": "\n".join(
            ["routes:", "  - name: site", "    session:", "     state_variables:", *bomb, ""]
        ).encode(),
    }
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        done = subprocess.run(
            [str(SCRIPT), "check", "--config", str(path)],
            env=base_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1, (name, done.stderr[-2000:])
        assert "Traceback" not in done.stdout + done.stderr, name
        problems = done.stderr.splitlines()
        assert problems and all(PROBLEM_LINE.match(p) for p in problems), (name, problems[:5])


def test_ip_parsing_never_raises() -> None:
    resolver = ClientIPResolver([ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")])

    @settings(max_examples=300, deadline=None, database=None)
    @given(peer=st.none() | HOP, forwarded=FORWARDED_FOR)
    def fuzz(peer: str | None, forwarded: list[str]) -> None:
        client = resolver.resolve(peer, forwarded)
        assert isinstance(client, str) and client

    fuzz()
