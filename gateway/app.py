"""The application factory: middleware order, routes and resources, from a policy alone.

`create_app` reads no files and no argv; the CLI (or a test) hands it a Policy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from .agent.runtime import agent_context
from .compiled_policy import ACTIVE_POLICY, ActivePolicy, CompiledPolicy
from .concurrency import SLOTS, Slots
from .errors import error_middleware
from .instrumentation import instrumentation_middleware
from .limits import Limiter, LimitStorage, MemoryStorage
from .limits.enforcement import LIMITER
from .metrics import METRICS, Metrics
from .policy import Backend, Policy
from .readiness import READINESS
from .request_context import REQUEST_IDS, RequestIds, add_response_headers, context_middleware
from .routes.dispatch import defer_continue, dispatch
from .routes.ops import LIFECYCLE, Lifecycle, setup_ops
from .upstream import UPSTREAM, TokenUpstream
from .upstream.backend import proxy_context
from .upstream.openai import OpenAIClient
from .upstream.outbound import OUTBOUND, OutboundRate
from .upstream.stub import StubUpstream

HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)


def create_app(
    policy: Policy,
    *,
    metrics: Metrics | None = None,
    storage: LimitStorage | None = None,
) -> web.Application:
    metrics = metrics or Metrics()
    # Order matters; each step may rely on those before it:
    app = web.Application(
        middlewares=[
            context_middleware,  # 1. request id, compiled snapshot, route match, client IP
            instrumentation_middleware,  # 2. metrics and access log around everything below
            error_middleware,  # 3. every refusal below becomes a JSON answer here
            # Then the handler: ops routes, or `dispatch`, which runs a policy route's
            # checks (origin, method, proxy body, limits) in order; see routes/dispatch.py.
        ],
        client_max_size=max([policy.server.max_body_bytes, *(r.body_limit for r in policy.routes)]),
        handler_args={
            "max_field_size": policy.server.max_header_bytes,
            # A client that goes away cancels its handler, and with it the upstream request
            # (aiohttp's default is to let handlers run on, streams included).
            "handler_cancellation": True,
        },
    )
    app[METRICS] = metrics
    app[REQUEST_IDS] = RequestIds()
    app[ACTIVE_POLICY] = ActivePolicy(CompiledPolicy.build(policy))
    app[LIFECYCLE] = Lifecycle()
    app[READINESS] = []  # what /readyz asks besides the limiter: each subsystem adds its own
    app[OUTBOUND] = OutboundRate(policy.upstream)  # upstream.max_rate, for every OpenAI call
    app[LIMITER] = _limiter(policy, metrics, storage)
    app[SLOTS] = Slots(metrics)  # open streams, uploads, previews per client
    metrics.set_upstream_mode(policy.stub_upstream)
    app.on_response_prepare.append(add_response_headers)
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(proxy_context)  # chatkit_proxy: its own session, no total timeout
    app.cleanup_ctx.append(_limiter_storage)
    app.cleanup_ctx.append(agent_context)  # chatkit_agent: stores, model clients, budgets
    setup_ops(app, policy.metrics.path, ops_port=policy.server.ops_port)
    # Every path, control characters included (`.` alone stops at a newline): the policy
    # decides, not the router.
    # No `100 Continue` before dispatch has checked the request (routes/dispatch.py).
    app.router.add_route("*", r"/{tail:[\s\S]*}", dispatch, expect_handler=defer_continue)
    return app


def _limiter(policy: Policy, metrics: Metrics, storage: LimitStorage | None) -> Limiter:
    cfg = policy.limiter
    if storage is None:
        if cfg.backend is Backend.REDIS:
            from .limits.redis import RedisStorage  # redis-py: ~9 MiB, only when used

            storage = RedisStorage(cfg)  # connects lazily; warmed in _limiter_storage
        else:
            storage = MemoryStorage(cfg.max_tracked_keys)
    errors = metrics.limiter_backend_errors.labels(cfg.backend.value)
    fallback = None if isinstance(storage, MemoryStorage) else MemoryStorage(cfg.max_tracked_keys)
    return Limiter(
        storage, on_error=cfg.on_backend_error, fallback=fallback, record_error=errors.inc
    )


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """One pooled client session for the app's life; the upstream client is built on it."""
    policy = app[ACTIVE_POLICY].current.policy
    upstream: TokenUpstream
    if policy.stub_upstream:
        upstream = StubUpstream(app[METRICS])
        app[UPSTREAM] = upstream
        yield
        return
    connector = aiohttp.TCPConnector(
        limit=policy.upstream.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
    )
    async with aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),  # no state carried from one browser to the next
    ) as session:
        app[HTTP_SESSION] = session
        app[UPSTREAM] = OpenAIClient(session, policy.upstream, app[METRICS], app[OUTBOUND])
        yield


async def _limiter_storage(app: web.Application) -> AsyncIterator[None]:
    storage = app[LIMITER].storage
    if not isinstance(storage, MemoryStorage):
        from .limits.redis import RedisStorage

        if isinstance(storage, RedisStorage):
            await storage.start()
    yield
    await storage.close()
