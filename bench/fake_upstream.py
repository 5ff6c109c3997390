"""A fast fake OpenAI for benchmarks: one canned session answer after an optional delay.

Run: python -m bench.fake_upstream PORT LATENCY_MS
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

from bench.common import use_uvloop

_BODY = json.dumps(
    {
        "id": "cksess_bench",
        "object": "chatkit.session",
        "client_secret": "ek_bench_0123456789",
        "expires_at": 2000000000,
        "status": "active",
    }
).encode()


def make_app(latency: float) -> web.Application:
    async def session(request: web.Request) -> web.Response:
        await request.read()
        if latency:
            await asyncio.sleep(latency)
        return web.Response(body=_BODY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chatkit/sessions", session)
    return app


def main() -> None:
    port, latency_ms = int(sys.argv[1]), float(sys.argv[2])
    use_uvloop()
    web.run_app(make_app(latency_ms / 1000), host="127.0.0.1", port=port, access_log=None,
                print=None)  # fmt: skip


if __name__ == "__main__":
    main()
