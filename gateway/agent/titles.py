"""Thread titles (SPEC §10): after a thread's first answer, one short model call names it.

The widget's history otherwise lists every conversation as "New chat". `respond()` sets
`thread.title` after the answer's last event (the SDK saves it and sends `thread.updated`),
so the call never holds up or fails the answer; it is bounded (the constants below) and
paid like a turn: a slot of `upstream.max_rate`, room in the token budgets reserved first.
`upstream_requests_total` counts the turns' calls alone (what the error-ratio alert
watches): a failed title is a warning line, and the model watch covers the title model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agents import Agent, Runner
from agents.items import ModelResponse
from agents.model_settings import ModelSettings
from agents.models.interface import Model
from agents.run import RunConfig
from agents.usage import Usage
from chatkit.types import UserMessageItem
from openai.types.responses import ResponseOutputMessage, ResponseOutputText

from ..errors import Unavailable
from .context import TurnContext
from .turn_cost import BYTES_PER_TOKEN

log = logging.getLogger("gateway.agent")

INSTRUCTIONS = (
    "You name conversations. Reply with a title of at most six words for a conversation "
    "that starts with the visitor's message below, in the language of that message. "
    "Reply with the title alone: no quotes, no final period."
)
INPUT_CHARS = 1000  # of the first message: enough to say what it is about
MAX_OUTPUT_TOKENS = 256  # room for a reasoning model's few thoughts; a title is ~10
TIMEOUT_SECONDS = 10.0  # the stream stays open for it (the answer is out already)
MAX_TITLE_CHARS = 80
_QUOTES = "\"'\u201c\u201d\u2018\u2019\u00ab\u00bb*# "  # around a title, taken off
# What a call reserves in the budgets before it is made (settled to its usage after).
RESERVED_TOKENS = (len(INSTRUCTIONS) + INPUT_CHARS) // BYTES_PER_TOKEN + MAX_OUTPUT_TOKENS


def first_text(message: UserMessageItem) -> str:
    """The message's typed text (tags and attachments left out), capped."""
    text = " ".join(p.text for p in message.content if p.type == "input_text")
    return " ".join(text.split())[:INPUT_CHARS]


def clean(raw: object) -> str | None:
    """The model's answer as a title: its first line, unquoted, within MAX_TITLE_CHARS."""
    if not isinstance(raw, str):
        return None
    line = next((x for x in raw.strip().splitlines() if x.strip()), "")
    line = " ".join(line.split()).strip(_QUOTES).removeprefix("Title:").strip()
    line = line.rstrip(".").strip()
    if len(line) > MAX_TITLE_CHARS:
        line = line[: MAX_TITLE_CHARS - 1].rstrip() + "…"
    return line or None


class Titler:
    """One route's title calls: its title model (fallbacks included), and how they are paid."""

    __slots__ = ("_agent", "_smooth")

    def __init__(
        self,
        model: Model,
        reasoning: Any,
        *,
        smooth: Callable[[], Awaitable[None]] | None,
    ) -> None:
        settings = ModelSettings(max_tokens=MAX_OUTPUT_TOKENS, reasoning=reasoning, store=False)
        self._agent = Agent[Any](
            name="title", instructions=INSTRUCTIONS, model=model, model_settings=settings
        )
        self._smooth = smooth

    async def title(self, message: UserMessageItem, context: TurnContext) -> str | None:
        """A title for the thread that `message` began, or None (no text, no room in the
        budgets, the call failed: logged, never raised)."""
        text = first_text(message)
        if not text or not await self._room(context):
            return None
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                if self._smooth is not None:
                    await self._smooth()
                result = await Runner.run(
                    self._agent, text, max_turns=1, run_config=RunConfig(tracing_disabled=True)
                )
        except Exception as exc:  # a title is never worth a failed answer
            log.warning("title call failed: %s (route %s)", type(exc).__name__, context.route)
            return None
        usage = result.context_wrapper.usage
        # On the turn's usage: its budgets and model_tokens_total, settled with the turn's.
        context.usage.append((usage.input_tokens, usage.output_tokens))
        return clean(result.final_output)

    async def _room(self, context: TurnContext) -> bool:
        budget = context.budget
        if budget is None:
            return True
        try:
            return await budget.reserve(RESERVED_TOKENS) is None
        except Unavailable:  # the budgets' Redis is down under `deny`
            return False


def is_title_call(instructions: object) -> bool:
    return instructions == INSTRUCTIONS


def stub_title(message: str) -> ModelResponse:
    """The stub model's answer to a title call (offline): the message's first words."""
    words = message.split()
    title = " ".join(words[:6]).rstrip("?!.,;:") or "A conversation"
    part = ResponseOutputText(type="output_text", text=title, annotations=[])
    output = ResponseOutputMessage(
        id="msg_stub_title", type="message", role="assistant", status="completed", content=[part]
    )
    asked = len(INSTRUCTIONS.split()) + len(words)
    out = len(title.split())
    usage = Usage(requests=1, input_tokens=asked, output_tokens=out, total_tokens=asked + out)
    return ModelResponse(output=[output], usage=usage, response_id=None)
