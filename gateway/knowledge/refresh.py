"""`serve` keeps each route's knowledge current: the `refresh` ingests and the index gauges.

One task per app polls every knowledge route each POLL_SECONDS (≤ 60 s, so the gauges follow
another process's ingest within a minute: SPEC §9) and re-ingests a route whose last commit
is older than its `refresh`, under the index's `refresh_lock`: one replica at a time. Nothing
here stops the gateway: a failure is logged by its type and counted (docs/DESIGN.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from ..agent.route_keys import AgentRouteKeys
from ..background import polling
from ..compiled_policy import ACTIVE_POLICY
from ..metrics import METRICS, Metrics
from .config import KnowledgeConfig

if TYPE_CHECKING:
    from ..policy import Policy
    from .index import KnowledgeIndex

log = logging.getLogger("gateway.knowledge")

POLL_SECONDS = 30.0  # the gauges' lag behind another process's ingest, at most
RETRY_SECONDS = 300.0  # after a failed run, before the next try (at most `refresh`)


class Stores(Protocol):
    """What the agent runtime lends: the route's store (opened and migrated; StoreUnavailable
    when it does not answer) and the knowledge index in it, one per store."""

    async def store_for(self, route: Any) -> Any: ...

    async def index_for(self, store: Any) -> KnowledgeIndex: ...


def _now() -> float:
    """Wall-clock seconds, as the index stamps its ingests (tests move it)."""
    return time.time()


def knowledge_routes(policy: Policy) -> list[tuple[AgentRouteKeys, KnowledgeConfig]]:
    return [
        (route, route.knowledge)
        for route in policy.routes
        if isinstance(route, AgentRouteKeys) and route.knowledge is not None
    ]


def _what(config: KnowledgeConfig) -> KnowledgeConfig:
    """The part of the block that decides what the index holds (not when, not how much)."""
    return dataclasses.replace(config, refresh=None, max_results=1)


@dataclasses.dataclass(slots=True)
class _RouteState:
    what: KnowledgeConfig
    task: asyncio.Task[None] | None = None
    retry_at: float = 0.0  # after a failed run
    last_ingest: float | None = None  # as last read from the index
    readable: bool = True  # the index answered the last poll (its failure is logged once)
    stale: bool = False  # its sources changed on a reload: ingest at once


class KnowledgeRefresher:
    """The poll loop and each route's refresh task, for one app."""

    __slots__ = ("_metrics", "_routes", "_runtime")

    def __init__(self, runtime: Stores, metrics: Metrics) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self._routes: dict[str, _RouteState] = {}

    async def poll(self, policy: Policy) -> None:
        """Gauges from every knowledge route's index; refreshes started when due."""
        current = knowledge_routes(policy)
        names = {route.name for route, _ in current}
        for name in list(self._routes):
            if name not in names:
                self._forget(name)
        for route, config in current:
            state = self._routes.get(route.name)
            if state is None:
                state = self._routes[route.name] = _RouteState(_what(config))
            elif state.what != _what(config):
                state.what, state.stale, state.retry_at = _what(config), True, 0.0
            await self._poll_route(route, config, state)

    async def _poll_route(
        self, route: AgentRouteKeys, config: KnowledgeConfig, state: _RouteState
    ) -> None:
        m, name = self._metrics, route.name
        if config.refresh is None:
            with contextlib.suppress(KeyError):
                m.knowledge_refresh.remove(name)
        else:
            m.knowledge_refresh.labels(name).set(config.refresh)
            m.knowledge_ingest_errors.labels(name)  # 0 from the start: increase() sees the 1st
        index: KnowledgeIndex | None = None
        try:
            async with asyncio.timeout(route.store.timeout_seconds * 2):  # one hung store
                index = await self._runtime.index_for(await self._runtime.store_for(route))
                stats = await index.stats(name)  # does not stall the others' polls
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            index = None
            if state.readable:
                why = type(exc).__name__
                log.warning("knowledge index of route %s not readable: %s", name, why)
            state.readable = False
        else:
            state.readable, state.last_ingest = True, stats.last_ingest
            m.knowledge_pages.labels(name).set(stats.pages)
            m.knowledge_last_ingest.labels(name).set(stats.last_ingest or 0)  # 0: never
        if config.refresh is None or (state.task is not None and not state.task.done()):
            return
        now, last = _now(), state.last_ingest
        due = state.stale or last is None or now >= last + config.refresh
        if not due or now < state.retry_at:
            return
        if index is None:  # due, and the store does not answer: a run that failed whole
            self._failed(name, config, "the store does not answer")
            return
        state.stale = False
        state.task = asyncio.create_task(
            self._refresh(route, config, index), name=f"knowledge refresh {name}"
        )

    def _failed(self, name: str, config: KnowledgeConfig, why: str) -> None:
        state = self._routes.get(name)
        retry = min(RETRY_SECONDS, config.refresh or RETRY_SECONDS)
        if state is not None:
            state.retry_at = _now() + retry
        self._metrics.knowledge_ingest_errors.labels(name).inc()
        log.warning(
            "knowledge refresh of route %s failed: %s (next try in %.0f s)", name, why, retry
        )

    async def _refresh(
        self, route: AgentRouteKeys, config: KnowledgeConfig, index: KnowledgeIndex
    ) -> None:
        from .index import IndexConflict
        from .ingest import ingest

        name = route.name
        try:
            async with index.refresh_lock(name) as held:
                if not held:  # its commit shows in the next polls' stats
                    log.info("knowledge refresh of route %s: another replica is at it", name)
                    return
                report = await ingest(name, config, index)
        except asyncio.CancelledError:
            raise
        except IndexConflict:  # the CLI committed meanwhile: its index serves
            log.info("knowledge refresh of route %s: another ingest committed first", name)
            return
        except Exception as exc:
            self._failed(name, config, type(exc).__name__)
            return
        if not report.committed:  # no page fetched: the old index stays, counted as 1 at least
            self._failed(name, config, f"no page fetched ({report.line()})")
            self._metrics.knowledge_ingest_errors.labels(name).inc(max(report.failed - 1, 0))
            return
        self._metrics.knowledge_ingest_errors.labels(name).inc(report.failed)
        log.info("knowledge refresh: %s", report.line())
        with contextlib.suppress(Exception):
            stats = await index.stats(name)
            self._metrics.knowledge_pages.labels(name).set(stats.pages)
            self._metrics.knowledge_last_ingest.labels(name).set(stats.last_ingest or 0)

    def _forget(self, name: str) -> None:
        """The route lost its knowledge block (or the route is gone): no more series."""
        state = self._routes.pop(name)
        if state.task is not None:
            state.task.cancel()
        for gauge in (
            self._metrics.knowledge_pages,
            self._metrics.knowledge_last_ingest,
            self._metrics.knowledge_refresh,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(name)

    async def close(self) -> None:
        tasks = [s.task for s in self._routes.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@contextlib.asynccontextmanager
async def run_knowledge(app: web.Application, runtime: Stores) -> AsyncIterator[None]:
    """For agent_context: the poll loop while the app runs (nothing without knowledge)."""
    refresher = KnowledgeRefresher(runtime, app[METRICS])
    try:
        async with polling(
            "knowledge poll",
            lambda: refresher.poll(app[ACTIVE_POLICY].current.policy),
            lambda: POLL_SECONDS,
            log,
        ):
            yield
    finally:
        await refresher.close()
