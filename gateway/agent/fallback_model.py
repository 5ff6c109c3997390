"""`agent.fallback_models`: a turn goes on to the next model when one is gone (SPEC §10).

A model past its shutdown date answers `model_not_found` (404, or 400 with that code) to
the request itself, before any event of the stream. This Agents SDK `Model` asks each of
the route's models in turn and moves on only then: once an event has been streamed it is
the visitor's answer, and whatever happens next is the turn's to report. Each refusal is
counted (`upstream_requests_total{outcome="model_not_found"}`) and logged once per model
per process; the last model's refusal is the turn's failure (chatkit_server.py counts
it). The first model stands for the others wherever the SDK asks the model about itself.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import openai
from agents.items import ModelResponse, TResponseStreamEvent
from agents.model_settings import ModelSettings
from agents.models.interface import Model

from .model_watch import MODEL_NOT_FOUND, model_not_found

log = logging.getLogger("gateway.agent")


class FallbackModel(Model):
    """The route's models, tried in order while the upstream says it does not serve one."""

    __slots__ = ("_count", "_models", "_route", "_smooth", "_warned", "model")

    def __init__(
        self,
        route: str,
        models: Sequence[Any],
        *,
        count: Callable[[str, str, float], None],
        warned: set[tuple[str, str]],
        smooth: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if not models:
            raise ValueError("at least one model")
        self._route = route
        self._models: tuple[Any, ...] = tuple(models)  # OpenAIResponsesModel, each named
        self._count = count  # (route, outcome, seconds) → upstream_requests_total
        self._warned = warned  # (route, model) already logged: shared by the process
        self._smooth = smooth  # a slot of upstream.max_rate before each further try
        self.model: str = self._models[0].model  # the SDK's default settings go by it

    def _refused(self, index: int, started: float) -> None:
        name = self._models[index].model
        self._count(self._route, MODEL_NOT_FOUND, time.monotonic() - started)
        if (self._route, name) in self._warned:
            return
        self._warned.add((self._route, name))
        following = self._models[index + 1].model
        log.warning(
            "the upstream does not serve model %s (route %s): the turn goes to %s",
            name, self._route, following,
        )  # fmt: skip

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        last = len(self._models) - 1
        for index, model in enumerate(self._models):
            await self._before_try(index)
            started = time.monotonic()
            try:
                response: ModelResponse = await model.get_response(*args, **kwargs)
            except (openai.NotFoundError, openai.BadRequestError) as exc:
                if index == last or not model_not_found(exc):
                    raise
                self._refused(index, started)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        last = len(self._models) - 1
        for index, model in enumerate(self._models):
            await self._before_try(index)
            started = time.monotonic()
            streamed = False
            # Closed with this one: a visitor who leaves ends the model's stream at once.
            events = cast(AsyncGenerator[Any, None], model.stream_response(*args, **kwargs))
            try:
                async with contextlib.aclosing(events):
                    async for event in events:
                        streamed = True
                        yield event
            except (openai.NotFoundError, openai.BadRequestError) as exc:
                if streamed or index == last or not model_not_found(exc):
                    raise
                self._refused(index, started)
                continue
            return

    async def _before_try(self, index: int) -> None:
        if index and self._smooth is not None:  # the first try's slot: the turn's own
            await self._smooth()

    # What the SDK asks the model about itself: the first model answers for all.
    def get_default_model_settings(self) -> ModelSettings | None:
        settings: ModelSettings | None = self._models[0].get_default_model_settings()
        return settings

    def _get_request_settings(self, settings: ModelSettings, **kwargs: Any) -> ModelSettings:
        adjusted: ModelSettings = self._models[0]._get_request_settings(settings, **kwargs)
        return adjusted

    def get_retry_advice(self, request: Any) -> Any:
        return self._models[0].get_retry_advice(request)

    async def _cleanup_on_run_end(self, owner: object) -> None:
        for model in self._models:
            await model._cleanup_on_run_end(owner)

    async def close(self) -> None:
        for model in self._models:
            await model.close()
