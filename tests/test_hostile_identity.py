"""Hostile input, round two: who a client is — limits per network, request ids that say
nothing, and `check` output that can be pasted anywhere."""

from __future__ import annotations

from typing import Any

from tests.conftest import ALLOWED, site_route

SESSION = "/api/chatkit/session"


def through_proxy(address: str) -> dict[str, str]:
    return {"Origin": ALLOWED, "X-Forwarded-For": address}


async def statuses(client: Any, addresses: list[str]) -> list[int]:
    out = []
    for address in addresses:
        resp = await client.post(SESSION, headers=through_proxy(address))
        out.append(resp.status)
    return out


ONE_64 = [f"2001:db8:1:2::{i:x}" for i in range(1, 31)] + [
    f"2001:db8:1:2:{i:x}:ffff:0:1" for i in range(1, 5)
]
LIMIT = {"key": "client_ip", "requests": 3, "per": "1h"}
TRUSTED = {"trusted_proxies": ["127.0.0.1/32"]}


async def test_an_ipv6_slash_64_is_one_client(gateway: Any) -> None:
    """30 addresses of one /64 (what one VM or one home line gets) share one bucket."""
    client = await gateway(routes=[site_route(LIMIT)], server=TRUSTED)
    got = await statuses(client, ONE_64)
    assert got == [200] * 3 + [429] * (len(ONE_64) - 3)
    # Another /64 has its own.
    assert await statuses(client, ["2001:db8:1:3::1"]) == [200]


async def test_the_prefix_is_configurable(gateway: Any) -> None:
    client = await gateway(
        routes=[site_route(LIMIT)],
        server=TRUSTED,
        limiter={"backend": "memory", "ipv6_prefix": 128},
    )
    assert await statuses(client, ONE_64[:10]) == [200] * 10
    client = await gateway(
        routes=[site_route(LIMIT)], server=TRUSTED, limiter={"backend": "memory", "ipv4_prefix": 24}
    )
    v4 = [f"198.51.100.{i}" for i in range(1, 6)]
    assert await statuses(client, v4) == [200, 200, 200, 429, 429]


async def test_ipv4_addresses_are_counted_one_by_one_by_default(gateway: Any) -> None:
    client = await gateway(routes=[site_route(LIMIT)], server=TRUSTED)
    v4 = [f"198.51.100.{i}" for i in range(1, 6)]
    assert await statuses(client, v4) == [200] * 5


async def test_request_ids_do_not_count_requests(gateway: Any) -> None:
    """Two ids a client sees must not tell how many requests came in between."""
    client = await gateway()
    ids = [(await client.get("/healthz")).headers["X-Request-ID"] for _ in range(50)]
    assert len(set(ids)) == 50 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # A shared prefix and a counter (what they were) would leave most of each id equal.
    assert len({i[:16] for i in ids}) == 50
    assert len({i[16:] for i in ids}) == 50


def test_urls_with_a_password_are_refused_and_never_printed(tmp_path: Any) -> None:
    import contextlib
    import io

    from gateway import cli
    from tests.conftest import policy_yaml

    for routes in (
        [site_route()],
        [{"name": "chat", "path": "/chatkit", "kind": "chatkit_proxy",
          "target": "http://admin:hunter2-secret@backend:8000/chatkit",
          "allowed_origins": [ALLOWED]}],
    ):  # fmt: skip
        text = policy_yaml(base_url="https://user:hunter2-secret@api.example/v1", routes=routes)
        config = tmp_path / "gateway.yaml"
        config.write_text(text)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert cli.main(["check", "--config", str(config), "--stub-upstream"]) == 1
        assert "hunter2" not in out.getvalue() + err.getvalue()
        problems = err.getvalue().splitlines()
        assert any(
            ": upstream.base_url: URL must not carry a user or password" in p for p in problems
        )
        if routes[0]["kind"] == "chatkit_proxy":
            assert any(": routes[0].target: URL must not carry a user" in p for p in problems)


async def test_the_key_never_reaches_the_log_in_any_field_or_spelling(
    tmp_path: Any, fake_openai: Any, gateways: list[Any], http: Any
) -> None:
    """An upstream that echoes the key in `error.type` and `error.code` (upper case,
    percent-encoded): one redaction at the log boundary masks every spelling."""
    from urllib.parse import quote

    from tests.conftest import TEST_KEY
    from tests.support.processes import base_env, free_port, poll, start_gateway, write_policy

    port = free_port()
    config = write_policy(tmp_path / "gateway.yaml", port=port, base_url=fake_openai.base_url)
    gw = await start_gateway(config, port, env=base_env(OPENAI_API_KEY=TEST_KEY), gateways=gateways)
    echoed = {
        "error": {
            "message": f"bad key {TEST_KEY.swapcase()}",
            "type": TEST_KEY.upper(),
            "code": quote(TEST_KEY, safe=""),
            "param": TEST_KEY,
        }
    }
    fake_openai.fail_next(400, body=echoed)
    async with http.post(f"{gw.url}{SESSION}", json={}, headers={"Origin": ALLOWED}) as resp:
        assert resp.status == 502
        assert TEST_KEY.lower() not in (await resp.text()).lower()

    async def logged_it() -> bool:
        return "upstream refused the request" in gw.stdout

    await poll(logged_it, 5, "the upstream error's log line")
    logged = gw.stdout
    assert "upstream refused the request" in logged and "***" in logged
    for spelling in (TEST_KEY, TEST_KEY.upper(), quote(TEST_KEY, safe=""), TEST_KEY[4:]):
        assert spelling.lower() not in logged.lower(), spelling


def test_the_redactor_covers_every_secret_the_policy_holds() -> None:
    from gateway.logs import Redactor
    from gateway.policy import parse_policy, secrets_in
    from tests.conftest import TEST_KEY, policy_yaml

    text = policy_yaml(
        limiter={"backend": "memory", "redis_url": "redis://gw:redis-pass-777@r:6379/0"},
        routes=[
            site_route(user_id={"secret": "user-id-secret-555"}),
            {"name": "chat", "path": "/chatkit", "kind": "chatkit_proxy",
             "target": "http://backend:8000/chatkit", "allowed_origins": [ALLOWED],
             "upstream_headers": {"X-Backend-Key": "backend-key-333"}},
        ],
    )  # fmt: skip
    secrets = secrets_in(parse_policy(text, env={"OPENAI_API_KEY": TEST_KEY}))
    assert {TEST_KEY, "redis-pass-777", "user-id-secret-555", "backend-key-333"} <= secrets
    redactor = Redactor()
    redactor.set_secrets(secrets | {"p@ss/word+1"})
    line = f'{{"detail":"{TEST_KEY.upper()} redis-pass-777 BACKEND-KEY-333 p%40ss%2Fword%2B1"}}'
    assert redactor.redact(line) == '{"detail":"*** *** *** ***"}'
    assert redactor.redact('{"detail":"nothing here"}') == '{"detail":"nothing here"}'


async def test_proxy_routes_count_the_network_too(gateway: Any) -> None:
    """The proxy route spends its untyped limits before it reads the body: by network too."""
    route = {
        "name": "chat", "path": "/chatkit", "kind": "chatkit_proxy",
        "target": "http://127.0.0.1:9/chatkit", "allowed_origins": [ALLOWED],
        "rate_limits": [LIMIT],
    }  # fmt: skip
    client = await gateway(routes=[route], server=TRUSTED)
    got = []
    for address in ONE_64[:6]:
        resp = await client.post(
            "/chatkit", headers=through_proxy(address), json={"type": "threads.list", "params": {}}
        )
        got.append(resp.status)
    assert got[3:] == [429, 429, 429] and 429 not in got[:3], got


async def test_a_compressed_request_body_is_refused_not_inflated(gateway: Any) -> None:
    """aiohttp inflates `Content-Encoding: gzip` bodies: past the size caps, and against the
    Content-Length it then waits for (the request ended in 499)."""
    import gzip
    import json

    route = {
        "name": "chat", "path": "/chatkit", "kind": "chatkit_proxy",
        "target": "http://127.0.0.1:9/chatkit", "allowed_origins": [ALLOWED],
    }  # fmt: skip
    client = await gateway(routes=[route, site_route()])
    body = gzip.compress(json.dumps({"type": "threads.list", "a": "x" * 100_000}).encode())
    for path in ("/chatkit", SESSION):
        resp = await client.post(
            path,
            data=body,
            headers={
                "Origin": ALLOWED,
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
            },
        )
        assert resp.status == 415, path
        assert (await resp.json())["error"]["code"] == "unsupported_media_type"
        assert resp.headers["Access-Control-Allow-Origin"] == ALLOWED
