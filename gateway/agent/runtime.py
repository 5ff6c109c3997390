"""What `chatkit_agent` routes share for the app's life: stores, model clients, budgets.

Opened in `agent_context` (cleanup_ctx) only when the policy has such a route, and looked
up per request by the compiled route, so a reload that adds a route, or points one at a
new store, gets it on first use: one engine per store URL, one ChatKit server per route
definition. A store that cannot be reached at start does not stop the gateway: its
requests answer 503 and `/readyz` 503 until it answers, then everything resumes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..background import polling
from ..compiled_policy import ACTIVE_POLICY
from ..knowledge.refresh import run_knowledge
from ..limits import LimitStorage
from ..limits.enforcement import LIMITER
from ..metrics import METRICS, Metrics
from ..policy import Policy, UpstreamConfig
from ..readiness import READINESS
from ..upstream.outbound import OUTBOUND
from .config import AgentRouteData
from .model_watch import run_model_watch
from .route_keys import AgentRouteKeys

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from ..knowledge.index import KnowledgeIndex
    from ..limits.budgets import Budgets
    from .agent_spec import AgentSpec
    from .chatkit_server import AgentServer
    from .context import TurnContext
    from .store import SqlStore

log = logging.getLogger("gateway.agent")
_SWEEP_EVERY = 3600.0
_CONNECT_SECONDS = 10.0


class AgentRuntime:
    def __init__(
        self,
        policy: Policy,
        metrics: Metrics,
        smooth: Callable[[], Awaitable[None]] | None = None,
        limits: LimitStorage | None = None,
    ) -> None:
        self._metrics = metrics
        self._smooth_upstream = smooth  # upstream.max_rate (upstream/outbound.py); None: stub
        self._stub = policy.stub_upstream
        self._stores: dict[str, SqlStore] = {}
        self._ready: set[str] = set()  # store URLs migrated
        self._lock = asyncio.Lock()
        self._servers: dict[str, tuple[AgentRouteKeys, AgentRouteData, AgentServer]] = {}
        self._clients: dict[tuple[str, str, float], AsyncOpenAI] = {}
        self._indexes: dict[SqlStore, KnowledgeIndex] = {}  # knowledge (§9), one per store
        self._index_lock = asyncio.Lock()
        self._refused_models: set[tuple[str, str]] = set()  # fallbacks: logged once each
        self._limiter_config = policy.limiter
        self._limits = limits

    @functools.cached_property
    def budgets(self) -> Budgets:
        """Beside the rate limits (`limits`: the limiter's storage): in the same Redis,
        through the same client and breaker, under the same `on_backend_error`. Built on
        first use: a gateway that serves no agent turn imports neither them nor redis."""
        from ..limits.budgets import budgets_for

        config = self._limiter_config
        errors = self._metrics.limiter_backend_errors.labels(config.backend.value)
        return budgets_for(config, self._limits, errors.inc)

    # -- stores ---------------------------------------------------------------------
    async def store_for(self, route: AgentRouteKeys) -> SqlStore:
        """The route's store, its tables created on first use (StoreUnavailable: 503)."""
        from .store import SqlStore, StoreUnavailable, migrate, open_engine

        cfg = route.store
        url = cfg.url.reveal()
        store = self._stores.get(url)
        if store is not None and url in self._ready:
            return store
        async with self._lock:
            store = self._stores.get(url)
            if store is None:
                engine = open_engine(url, timeout=cfg.timeout_seconds, pool_size=cfg.pool_size)
                on_error = functools.partial(self._store_error, route.name)
                store = SqlStore(engine, timeout=cfg.timeout_seconds, on_error=on_error)
                self._stores[url] = store
            if url not in self._ready:
                try:
                    async with asyncio.timeout(cfg.timeout_seconds * 2):
                        await migrate(store.engine)
                except RuntimeError:
                    raise
                except Exception as exc:
                    self._metrics.store_errors.labels(route.name).inc()
                    log.warning("thread store not reachable: %s", type(exc).__name__)
                    raise StoreUnavailable() from None
                self._ready.add(url)
        return store

    def _store_error(self, route: str, context: TurnContext | None) -> None:
        """A store call failed: counted for the turn's route (a sweep's: the one that
        opened the store)."""
        self._metrics.store_errors.labels(context.route if context is not None else route).inc()

    async def _reachable(self, route: AgentRouteKeys) -> SqlStore | None:
        """The route's store, None while it cannot be reached (a newer schema: RuntimeError)."""
        from .store import StoreUnavailable

        try:
            return await self.store_for(route)
        except StoreUnavailable:
            return None

    async def not_ready(self, policy: Policy) -> str | None:
        """/readyz's check (readiness.py): every agent route's store answers."""
        for route in agent_routes(policy):
            store = await self._reachable(route)
            if store is None or not await store.ping():
                return "thread store down"
        return None

    # -- servers and models ---------------------------------------------------------
    def server_for(
        self,
        route: AgentRouteKeys,
        data: AgentRouteData,
        store: SqlStore,
        upstream: UpstreamConfig,
    ) -> AgentServer:
        cached = self._servers.get(route.name)
        if cached and cached[0] == route and cached[1] is data and cached[2].sql is store:
            return cached[2]
        from .chatkit_server import AgentServer

        spec = data.spec
        if spec.knowledge is not None:
            spec = self._with_search(route, spec, store)
        server = AgentServer(
            store,
            spec,
            self._model(data.spec.model, route, upstream),
            smooth=self._smooth_upstream,
            titler=self._titler(route, upstream, data.spec.model_settings.reasoning),
            on_feedback=lambda name, kind, n: self._metrics.feedback.labels(name, kind).inc(n),
        )
        self._servers[route.name] = (route, data, server)
        return server

    def _with_search(self, route: AgentRouteKeys, spec: AgentSpec, store: SqlStore) -> AgentSpec:
        """The spec with the site search tool (SPEC §9), bound to the store's index."""
        import dataclasses

        from ..knowledge.tool import search_tool

        assert spec.knowledge is not None
        tool = search_tool(
            route.name,
            spec.knowledge.max_results,
            lambda: self.index_for(store),
            self._metrics.knowledge_searches.labels(route.name).inc,
            timeout=route.store.timeout_seconds,
        )
        return dataclasses.replace(spec, tools=(*spec.tools, tool))

    async def index_for(self, store: SqlStore) -> KnowledgeIndex:
        """The knowledge index in the store's database, opened on first use (a failure is
        retried on the next)."""
        index = self._indexes.get(store)
        if index is not None:
            return index
        from ..knowledge.sql_index import open_index

        async with self._index_lock:
            index = self._indexes.get(store)
            if index is None:
                index = self._indexes[store] = await open_index(store.engine)
        return index

    def _titler(self, route: AgentRouteKeys, upstream: UpstreamConfig, reasoning: Any) -> Any:
        """The route's thread titles (titles.py): None with `titles: false`; `reasoning`:
        what the route's models take."""
        from .config import title_model
        from .titles import Titler

        model = title_model(route.titles, route.agent)
        if model is None:
            return None
        titling = self._model(model, route, upstream, count=_uncounted)
        return Titler(titling, reasoning, smooth=self._smooth_upstream)

    def _model(
        self,
        model: str,
        route: AgentRouteKeys,
        upstream: UpstreamConfig,
        count: Callable[[str, str, float], None] | None = None,
    ) -> Any:
        if self._stub:
            from .stub_model import StubModel

            return StubModel()
        from agents import OpenAIResponsesModel
        from openai import AsyncOpenAI, Timeout

        from .fallback_model import FallbackModel

        idle = route.stream_idle_timeout_seconds
        key = (upstream.base_url, upstream.api_key.reveal(), idle)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = AsyncOpenAI(
                api_key=upstream.api_key.reveal(),
                base_url=upstream.base_url,
                max_retries=upstream.retries,
                timeout=Timeout(idle, connect=min(_CONNECT_SECONDS, idle)),
            )
        names = tuple(dict.fromkeys((model, *route.agent.fallback_models)))
        return FallbackModel(
            route.name,
            [OpenAIResponsesModel(model=name, openai_client=client) for name in names],
            count=count or self._metrics.upstream_call,
            warned=self._refused_models,
            smooth=self._smooth_upstream,
        )

    # -- retention and shutdown -----------------------------------------------------
    async def open_all(self, policy: Policy) -> None:
        """At start: every store opened and migrated; one not reachable is retried on use
        (a database of a newer schema stops the start: RuntimeError)."""
        for route in agent_routes(policy):
            await self._reachable(route)

    async def sweep_once(self, policy: Policy) -> None:
        for route in agent_routes(policy):
            store = await self._reachable(route)
            if store is None:
                continue
            from .store import StoreUnavailable

            try:  # retention None keeps threads; unsent uploads still go after the hour
                deleted = await store.sweep(route.store.retention)
            except StoreUnavailable:
                continue
            if deleted:
                log.info("retention sweep deleted %d threads (route %s)", deleted, route.name)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        for store in self._stores.values():
            await store.engine.dispose()


def _uncounted(route: str, outcome: str, seconds: float) -> None:
    """A title's model_not_found refusals: logged by the fallback, not counted as turns."""


AGENTS = web.AppKey("agents", AgentRuntime)


def agent_routes(policy: Policy) -> list[AgentRouteKeys]:
    return [r for r in policy.routes if isinstance(r, AgentRouteKeys)]


async def agent_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the runtime, its stores opened (and migrated) at start, the sweep, and
    the routes' knowledge kept current (gateway/knowledge/refresh.py)."""
    policy = app[ACTIVE_POLICY].current.policy
    smooth = None if policy.stub_upstream else app[OUTBOUND].wait  # upstream.max_rate
    runtime = AgentRuntime(policy, app[METRICS], smooth, app[LIMITER].storage)
    app[AGENTS] = runtime
    app[READINESS].append(runtime.not_ready)
    await runtime.open_all(policy)
    await runtime.sweep_once(policy)
    sweeps = polling(
        "retention sweep",
        lambda: runtime.sweep_once(app[ACTIVE_POLICY].current.policy),
        lambda: _SWEEP_EVERY,
        log,
        wait_first=True,
    )
    try:
        # knowledge: refreshes and index gauges; the models' shutdown dates (model_watch.py)
        async with sweeps, run_knowledge(app, runtime), run_model_watch(app):
            yield
    finally:
        app[READINESS].remove(runtime.not_ready)
        await runtime.close()
