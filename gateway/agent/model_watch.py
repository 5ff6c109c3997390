"""The model watch: each agent route's models asked about at start and daily (SPEC §10).

Models retire on a date OpenAI announces (`GET /models/{id}`'s `shutdown_date`), and on
that day a chat configured with one stops answering: the watch says so months ahead where
an operator looks (a log line, a gauge per route and model). A failed look-up changes
nothing and is retried; nothing here stops the gateway or touches readiness. openai is
imported only when there is something to ask: a token-only gateway has no `agent` extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..background import polling
from ..compiled_policy import ACTIVE_POLICY
from ..metrics import METRICS, Metrics
from .config import title_model
from .route_keys import AgentRouteKeys

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from ..policy import Policy, UpstreamConfig

log = logging.getLogger("gateway.agent")

POLL_SECONDS = 60.0  # a reload's new models are asked about within this
CHECK_SECONDS = 86400.0  # daily: a shutdown date is announced months ahead
RETRY_SECONDS = 300.0  # after a failed look-up
MODEL_NOT_FOUND = "model_not_found"


def _now() -> float:
    """Wall-clock seconds (tests move it)."""
    return time.time()


def watched_models(policy: Policy) -> dict[str, tuple[str, ...]]:
    """Each agent route's model names, in the order its turns try them."""
    out: dict[str, tuple[str, ...]] = {}
    for route in policy.routes:
        if not isinstance(route, AgentRouteKeys):
            continue
        agent = route.agent
        titles = title_model(route.titles, agent)  # titles.py's calls
        named = (agent.model, *agent.fallback_models, *([titles] if titles else []))
        out[route.name] = tuple(dict.fromkeys(named))
    return out


def model_not_found(exc: BaseException) -> bool:
    """The upstream does not serve the model asked for: OpenAI's `model_not_found`, with 404
    (GET /models/{id}, and a gone model on most endpoints) or 400 (/responses)."""
    status = getattr(exc, "status_code", None)
    return status in (400, 404) and getattr(exc, "code", None) == MODEL_NOT_FOUND


def shutdown_date(model: Any) -> datetime.date | None:
    """A `Model`'s shutdown date: "YYYY-MM-DD" (OpenAI) or unix seconds; an SDK older than
    the field keeps it among the extra fields, which pydantic serves as attributes too."""
    raw = getattr(model, "shutdown_date", None)
    if isinstance(raw, bool) or raw is None or raw == "":
        return None
    try:
        if isinstance(raw, int | float):
            return datetime.datetime.fromtimestamp(raw, datetime.UTC).date()
        if isinstance(raw, str):
            return datetime.date.fromisoformat(raw.strip()[:10])
    except (ValueError, OverflowError, OSError):
        pass
    log.warning("model %s: shutdown_date %r not understood", getattr(model, "id", "?"), raw)
    return None


def shutdown_timestamp(date: datetime.date) -> float:
    """The date's 00:00 UTC, in unix seconds (what the gauge and the alert compare)."""
    return datetime.datetime.combine(date, datetime.time(), datetime.UTC).timestamp()


@dataclasses.dataclass(frozen=True, slots=True)
class Lookup:
    """What the upstream said about one model. `served` None: the look-up failed (`failure`
    says how, never with the upstream's words), so nothing is known."""

    served: bool | None
    shutdown: datetime.date | None = None
    failure: str = ""


async def look_up(client: AsyncOpenAI, model: str) -> Lookup:
    import openai

    try:
        found = await client.models.retrieve(model)
    except openai.APIStatusError as exc:
        if model_not_found(exc):
            return Lookup(False)
        return Lookup(None, failure=f"HTTP {exc.status_code}")
    except openai.OpenAIError as exc:  # connection, timeout, a body that is not a Model
        return Lookup(None, failure=type(exc).__name__)
    return Lookup(True, shutdown_date(found))


def shutdown_message(route: str, model: str, date: datetime.date) -> str:
    return (
        f"model {model} of route {route} shuts down on {date.isoformat()}: move agent.model "
        "to its successor, or name one in agent.fallback_models"
    )


def missing_message(route: str, model: str) -> str:
    return f"the upstream does not serve model {model} (route {route}): turns sent to it fail"


def client_for(upstream: UpstreamConfig) -> AsyncOpenAI:
    """A client for look-ups: the policy's key and base URL, no retries of its own."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        api_key=upstream.api_key.reveal(),
        base_url=upstream.base_url,
        max_retries=0,
        timeout=upstream.timeout_seconds,
    )


@dataclasses.dataclass(slots=True)
class _State:
    due: float = 0.0
    failing: bool = False  # the last look-up failed (logged once per run of failures)


class ModelWatch:
    """The watched (route, model) pairs, their next look-up and their series."""

    __slots__ = ("_client", "_metrics", "_states", "_upstream")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._states: dict[tuple[str, str], _State] = {}
        self._client: AsyncOpenAI | None = None
        self._upstream: tuple[str, str, float] | None = None

    async def poll(self, policy: Policy) -> None:
        """Look up every watched model that is due; forget the ones no longer named."""
        wanted = [] if policy.stub_upstream else [
            (route, model) for route, models in watched_models(policy).items() for model in models
        ]  # fmt: skip
        for key in set(self._states) - set(wanted):
            self._forget(key)
        if not wanted:
            return
        client = await self._client_for(policy.upstream)
        for key in wanted:
            state = self._states.setdefault(key, _State())
            if _now() >= state.due:
                self._record(key, state, await look_up(client, key[1]))

    def _record(self, key: tuple[str, str], state: _State, found: Lookup) -> None:
        m, (route, model) = self._metrics, key
        if found.served is None:
            state.due = _now() + RETRY_SECONDS
            if not state.failing:
                log.warning(
                    "model look-up failed: %s (route %s, model %s); tried again in %ds",
                    found.failure, route, model, RETRY_SECONDS,
                )  # fmt: skip
            state.failing = True
            return
        state.due, state.failing = _now() + CHECK_SECONDS, False
        m.model_available.labels(route, model).set(1 if found.served else 0)
        if not found.served:
            log.error(missing_message(route, model))
        if found.shutdown is None:
            with contextlib.suppress(KeyError):
                m.model_shutdown.remove(route, model)
            return
        m.model_shutdown.labels(route, model).set(shutdown_timestamp(found.shutdown))
        log.warning(shutdown_message(route, model, found.shutdown))

    def _forget(self, key: tuple[str, str]) -> None:
        del self._states[key]
        for gauge in (self._metrics.model_available, self._metrics.model_shutdown):
            with contextlib.suppress(KeyError):
                gauge.remove(*key)

    async def _client_for(self, upstream: UpstreamConfig) -> AsyncOpenAI:
        """One client; a reload to another key or base URL asks about everything again."""
        wanted = (upstream.base_url, upstream.api_key.reveal(), upstream.timeout_seconds)
        if self._client is None or wanted != self._upstream:
            await self.close()
            self._client, self._upstream = client_for(upstream), wanted
            for state in self._states.values():
                state.due = 0.0
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


@contextlib.asynccontextmanager
async def run_model_watch(app: web.Application) -> AsyncIterator[None]:
    """For agent_context: the watch's poll loop while the app runs (in the background: a
    slow upstream never holds up the start)."""
    watch = ModelWatch(app[METRICS])
    try:
        async with polling(
            "model watch",
            lambda: watch.poll(app[ACTIVE_POLICY].current.policy),
            lambda: POLL_SECONDS,
            log,
        ):
            yield
    finally:
        await watch.close()
