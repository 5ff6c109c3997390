"""The floor plus the gateway's bench-policy features at their barest: a lower bound.

One handler does, the cheapest way it can, what the bench policy makes the gateway do on
the token path: the Origin checked against a set; a request id; a JSON body parsed; two
GCRA limits (client IP and global) in one dict, with the `RateLimit` fields; a user id
(one HMAC, memoised); OpenAI's headers on the upstream call; the answer's headers (request
id, CORS, no-store, nosniff, `Server`); a counter and a histogram; one JSON access line on
stdout (its time a plain number). No policy file, reload, error answers, retries, timeouts
or outbound smoothing of its own, log flushing, or further metrics.

Its cost over the floor is what these features cost on aiohttp before any design choice of
the gateway's: when that alone is above a target, no implementation meets the target.
bench/instructions.py counts it as the `floor-features` target.

Run: python -m bench.floor_features PORT UPSTREAM_URL
"""

from __future__ import annotations

import hmac
import itertools
import json
import math
import os
import sys
import time
from bisect import bisect_left
from typing import Any

from aiohttp import web

from bench.common import SESSION, pooled_session, use_uvloop
from gateway.gc_tuning import tune_gc

ALLOWED = frozenset({"https://example.org"})
# (name, requests, per seconds): the bench policy's two limits.
LIMITS = (("client_ip", 1_000_000_000, 3600.0), ("global", 1_000_000_000, 86400.0))
BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ENCODE = json.JSONEncoder(separators=(",", ":")).encode
EXPOSE = "Retry-After, RateLimit, RateLimit-Policy, X-Request-ID"


def make_app(upstream: str) -> web.Application:
    ids = itertools.count()
    prefix = os.urandom(8).hex()
    user_key = os.urandom(32)
    users: dict[str, str] = {}
    tats: dict[str, float] = {}
    answers: dict[tuple[str, str], int] = {}
    buckets = [0] * (len(BOUNDS) + 1)
    auth = {
        "Authorization": "Bearer sk-bench-not-a-real-key",
        "Accept": "application/json",
        "User-Agent": "chatkit-gateway/bench",
        "OpenAI-Beta": "chatkit_beta=v1",
    }
    out = sys.stdout

    def spend(ip: str, now: float) -> dict[str, str]:
        tightest: tuple[int, str, float, float] | None = None
        for name, requests, per in LIMITS:
            key = f"{name}:{ip}" if name == "client_ip" else name
            interval = per / requests
            tat = max(tats.get(key, 0.0), now) + interval
            tats[key] = tat
            left = int((per - (tat - now)) / interval)
            if tightest is None or left < tightest[0]:
                tightest = (left, name, tat - now, per)
        assert tightest is not None
        left, name, reset, per = tightest
        return {
            "RateLimit-Policy": f'"{name}";q=1000000000;w={math.ceil(per)}',
            "RateLimit": f'"{name}";r={left};t={max(1, math.ceil(reset))}',
        }

    async def token(request: web.Request) -> web.Response:
        started = time.perf_counter()
        origin = request.headers.get("Origin")
        if origin not in ALLOWED:
            raise web.HTTPForbidden()
        rid = f"{prefix}{next(ids):016x}"
        ip = request.remote or "-"
        browser = json.loads(await request.read() or b"{}")
        assert isinstance(browser, dict)
        limits = spend(ip, time.monotonic())
        user = users.get(ip)
        if user is None:
            user = users[ip] = "u_" + hmac.digest(user_key, ip.encode(), "sha256")[:16].hex()
        body = {"workflow": {"id": "wf_bench"}, "user": user}
        headers = {**auth, "X-Request-ID": rid, "X-Client-Request-Id": rid}
        up_started = time.perf_counter()
        async with request.app[SESSION].post(upstream, json=body, headers=headers) as r:
            data: dict[str, Any] = await r.json()
        upstream_ms = (time.perf_counter() - up_started) * 1000
        response = web.json_response(
            {"client_secret": data["client_secret"], "expires_at": data["expires_at"]},
            headers={
                "X-Request-ID": rid,
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Expose-Headers": EXPOSE,
                "Vary": "Origin",
                "Cache-Control": "no-store",
                "Pragma": "no-cache",
                "X-Content-Type-Options": "nosniff",
                "Server": "chatkit-gateway",
                **limits,
            },
        )
        elapsed = time.perf_counter() - started
        answers[("site", "200")] = answers.get(("site", "200"), 0) + 1
        buckets[bisect_left(BOUNDS, elapsed)] += 1
        fields = {
            "time": time.time(),
            "level": "info",
            "message": "request",
            "request_id": rid,
            "route": "site",
            "method": request.method,
            "path": request.path,
            "status": 200,
            "duration_ms": elapsed * 1000,
            "client_ip": ip,
            "origin": origin,
            "upstream_status": r.status,
            "upstream_ms": upstream_ms,
        }
        out.write(ENCODE(fields) + "\n")
        return response

    app = web.Application()
    app.cleanup_ctx.append(pooled_session(limit=512))
    app.router.add_post("/api/chatkit/session", token)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    use_uvloop()
    tune_gc()
    web.run_app(make_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
