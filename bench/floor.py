"""The framework floor: a bare aiohttp pass-through doing the token job with no policy.

No origin check, no limits, no metrics, no logs: POST in → POST to the upstream on one
pooled session → `{client_secret, expires_at}` out. What is left is aiohttp itself, in a
process set up as the gateway's is (uvloop, the collector's threshold of gc_tuning.py) so
that the two differ only in their per-request work; `--default-gc` keeps CPython's.

Run: python -m bench.floor PORT UPSTREAM_URL [--default-gc]
"""

from __future__ import annotations

import sys

from aiohttp import web

from bench.common import SESSION, pooled_session, use_uvloop
from gateway.gc_tuning import tune_gc


def make_app(upstream: str) -> web.Application:
    async def token(request: web.Request) -> web.Response:
        await request.read()
        body = {"workflow": {"id": "wf_bench"}, "user": "u_bench"}
        async with request.app[SESSION].post(upstream, json=body) as r:
            data = await r.json()
        return web.json_response(
            {"client_secret": data["client_secret"], "expires_at": data["expires_at"]}
        )

    app = web.Application()
    app.cleanup_ctx.append(pooled_session(limit=512))  # the gateway's default upstream pool
    app.router.add_post("/api/chatkit/session", token)
    return app


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    use_uvloop()
    if "--default-gc" not in sys.argv[3:]:
        tune_gc()
    web.run_app(make_app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
