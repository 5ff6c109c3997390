"""`respond()`: one turn of the policy's agent, as openai-chatkit's `ChatKitServer` wants it.

The SDK serves the protocol (parsing, thread bookkeeping, persistence of finished items,
cancellation); the Agents SDK runs the model; `stream_agent_response` turns the model's
events into ChatKit's. What the gateway adds: the last `history_items` of the thread as
input, a progress update while a hosted tool runs (the SDK's converter passes those events
by, so the widget would sit silent for the whole search), the tokens counted, and model
failures turned into a generic ChatKit error — never the upstream's words.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import openai
from agents import Agent, Runner, RunResultStreaming
from agents.exceptions import AgentsException
from agents.models.interface import Model
from agents.run import RunConfig
from agents.stream_events import StreamEvent
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
from chatkit.types import (
    ChatKitReq,
    FeedbackKind,
    ProgressUpdateEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
    is_streaming_req,
)
from pydantic import BaseModel, TypeAdapter

from ..knowledge.citations import cite
from .agent_spec import AgentSpec
from .context import TurnContext
from .converter import AttachmentConverter
from .model_watch import MODEL_NOT_FOUND, model_not_found
from .store import SqlStore
from .titles import Titler
from .turn_cost import input_estimate, reserve_turn

log = logging.getLogger("gateway.agent")

# Hosted tools run inside the model's response; their "searching" events become this.
_PROGRESS = {
    "response.file_search_call.searching": ("search", "Searching the documentation…"),
    "response.web_search_call.searching": ("globe", "Searching the web…"),
}
# The SDK's `process` builds this adapter for every request: about 10 ms of CPU each time
# (pydantic generating the schema of the request union). Built once here; `process` below
# is the SDK's own dispatch otherwise: tests/test_agent_store.py compares the answers, and
# tests/test_agent_sdk_seams.py fails when the installed SDK's `process` changes.
_REQUEST = TypeAdapter[ChatKitReq](ChatKitReq)
_FAILED = "The assistant could not answer just now. Please try again."
_RATE = "The assistant is busy. Please try again in a moment."


class _WithProgress:
    """A run result whose events also put a ChatKit progress update on the queue of
    `AgentContext` when a hosted tool starts; `stream_agent_response` reads only
    `stream_events()`, so the rest of the result is not needed here."""

    def __init__(self, result: RunResultStreaming, context: AgentContext[TurnContext]) -> None:
        self._result = result
        self._context = context

    async def stream_events(self) -> AsyncIterator[StreamEvent]:
        async for event in self._result.stream_events():
            if event.type == "raw_response_event":
                data = event.data
                if data.type == "response.output_text.annotation.added" and isinstance(
                    data.annotation, BaseModel
                ):
                    # openai parses it into the event module's own citation classes, which
                    # chatkit's converter (validating against the output-text classes)
                    # refuses; as a dict it validates. (openai 3.x with openai-chatkit 1.6.)
                    data = data.model_copy(update={"annotation": data.annotation.model_dump()})
                    event = dataclasses.replace(event, data=data)
                progress = _PROGRESS.get(data.type)
                if progress is not None:
                    icon, text = progress
                    await self._context.stream(ProgressUpdateEvent(icon=icon, text=text))
            yield event


class AgentServer(ChatKitServer[TurnContext]):
    """The ChatKit server of one `chatkit_agent` route (one per route and policy)."""

    def __init__(
        self,
        store: SqlStore,
        spec: AgentSpec,
        model: Model,
        *,
        smooth: Callable[[], Awaitable[None]] | None,
        titler: Titler | None = None,
        on_feedback: Callable[[str, str, int], None] | None = None,
    ) -> None:
        super().__init__(store, store.attachments if spec.attachments is not None else None)
        self.sql = store
        self.spec = spec
        self._model = model
        self._smooth = smooth  # a slot of upstream.max_rate (None: the stub upstream)
        self._titler = titler  # None: `titles: false` (SPEC §10)
        self._on_feedback = on_feedback  # (route, kind, items) → feedback_total

    async def add_feedback(
        self, thread_id: str, item_ids: list[str], feedback: FeedbackKind, context: TurnContext
    ) -> None:
        """The widget's thumbs, kept (SPEC §10; the SDK's own does nothing): another user's
        thread or item is NotFoundError, a 404 like an unknown id."""
        rated = await self.sql.save_feedback(thread_id, item_ids, feedback, context)
        if self._on_feedback is not None:
            self._on_feedback(context.route, feedback, rated)

    async def process(
        self, request: str | bytes | bytearray, context: TurnContext
    ) -> StreamingResult | NonStreamingResult:
        parsed = _REQUEST.validate_json(request)
        if is_streaming_req(parsed):
            return StreamingResult(self._process_streaming(parsed, context))
        return NonStreamingResult(await self._process_non_streaming(parsed, context))

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: TurnContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        spec = self.spec
        recent = await self.store.load_thread_items(
            thread.id, None, spec.history_items, "desc", context
        )
        history = await AttachmentConverter(self.sql.attachments, context).to_agent_input(
            list(reversed(recent.data))
        )
        # Counted where the text lies: no copy of the input, whose attachments are inline.
        context.estimated_input = input_estimate(
            history, spec.instructions, context.attachment_bytes
        )
        agent = Agent[AgentContext[TurnContext]](
            name=spec.name,
            instructions=spec.instructions,
            model=self._model,
            tools=list(spec.tools),
            model_settings=spec.model_settings,
        )
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        await reserve_turn(context)  # the budgets' room for it, or the turn ends here
        if self._smooth is not None:
            await self._smooth()
        started = time.monotonic()
        result = Runner.run_streamed(
            agent,
            history,
            context=agent_context,
            run_config=RunConfig(tracing_disabled=True, trace_include_sensitive_data=False),
        )
        outcome = "ok"
        first = sum(isinstance(i, UserMessageItem) for i in recent.data) == 1
        try:
            events = stream_agent_response(
                agent_context, cast(RunResultStreaming, _WithProgress(result, agent_context))
            )
            events = cite(events, context)  # `[n]` → links to the site's pages (§9)
            async for event in events:
                yield event
        except openai.RateLimitError:
            outcome = "rate_limited"
            raise CustomStreamError(_RATE, allow_retry=True) from None
        except openai.AuthenticationError:
            outcome = "auth_failed"
            log.error("the model upstream refused the API key (route %s)", context.route)
            raise CustomStreamError(_FAILED, allow_retry=False) from None
        except openai.APIConnectionError as exc:  # APITimeoutError is one
            outcome = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection_error"
            raise CustomStreamError(_FAILED, allow_retry=True) from None
        except openai.APIStatusError as exc:
            outcome = "server_error" if exc.status_code >= 500 else "client_error"
            outcome = MODEL_NOT_FOUND if model_not_found(exc) else outcome  # fallbacks spent
            log.warning("model call failed: HTTP %s (route %s)", exc.status_code, context.route)
            raise CustomStreamError(_FAILED, allow_retry=exc.status_code >= 500) from None
        except (openai.OpenAIError, AgentsException) as exc:
            outcome = "server_error"
            log.warning("model call failed: %s (route %s)", type(exc).__name__, context.route)
            raise CustomStreamError(_FAILED, allow_retry=True) from None
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"  # the visitor left
            raise
        except Exception:
            outcome = "error"
            log.exception("agent turn failed (route %s)", context.route)
            raise CustomStreamError(_FAILED, allow_retry=True) from None
        finally:
            if not result.is_complete:
                result.cancel()  # the visitor left, or the stream failed: stop the model
            # Recorded on the turn; counted and charged when it ends (turn_cost.settle_turn).
            usage = result.context_wrapper.usage
            context.usage.append((usage.input_tokens, usage.output_tokens))
            context.outcome = outcome  # a 4xx is charged nothing (turn_cost.py)
            context.call_seconds = time.monotonic() - started
        # After the answer's last event: the thread's title (titles.py); the SDK saves the
        # changed thread and sends the widget `thread.updated`.
        if self._titler is not None and first and thread.title is None and input_user_message:
            thread.title = await self._titler.title(input_user_message, context)
