"""The built-in model of `--stub-upstream`: the Agents SDK's `Model` interface, answering
with the Responses events OpenAI would stream (the `openai` SDK's own types) — a file
search that takes a moment, a cited answer word by word, and usage — so the widget's
whole flow, progress update and source included, works offline through the same path.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import AsyncIterator
from typing import Any

from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFileSearchCallCompletedEvent,
    ResponseFileSearchCallInProgressEvent,
    ResponseFileSearchCallSearchingEvent,
    ResponseFileSearchToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseOutputTextAnnotationAddedEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)
from openai.types.responses.response_output_text import AnnotationFileCitation

from ..knowledge.stub import offers_search, stub_turn
from .titles import is_title_call, stub_title

STUB_SOURCE = "stub-guide.md"
_SEARCH_SECONDS = 0.4
_WORD_SECONDS = 0.04


def _last_user_text(input: str | list[TResponseInputItem]) -> str:
    if isinstance(input, str):
        return input
    for item in reversed(input):
        if isinstance(item, dict) and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [p.get("text", "") for p in content if isinstance(p, dict)]
                return " ".join(t for t in texts if isinstance(t, str))
    return ""


class StubModel(Model):
    """Answers every turn by quoting the question back, citing one stub source."""

    def __init__(self, *, word_seconds: float = _WORD_SECONDS) -> None:
        self._word_seconds = word_seconds

    def _answer(self, question: str) -> str:
        asked = " ".join(question.split())[:200] or "(nothing)"
        asked += "" if asked.endswith((".", "?", "!", "…")) else "."  # every sentence ends
        return (
            f"This is the gateway's stub model (no OpenAI key is set). You asked: {asked} "
            f"With a key, the policy's model answers here, citing your documents."
        )

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        if is_title_call(kwargs.get("system_instructions")):  # titles offline (titles.py)
            return stub_title(_last_user_text(kwargs.get("input", "")))
        events = [e async for e in self.stream_response(*args, **kwargs)]
        done = events[-1]
        assert isinstance(done, ResponseCompletedEvent)
        usage = done.response.usage
        assert usage is not None
        return ModelResponse(
            output=list(done.response.output),
            usage=Usage(
                requests=1,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                total_tokens=usage.total_tokens,
            ),
            response_id=done.response.id,
        )

    async def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        *args: Any,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        # Random, as OpenAI's are: a count from 1 would give a thread stored by an earlier
        # process (or another replica) an item id it already holds, and ChatKit refuses it.
        n = secrets.randbits(64)
        seq = itertools.count()
        rid, fs_id, msg_id = f"resp_stub{n}", f"fs_stub{n}", f"msg_stub{n}"
        question = _last_user_text(input)
        if args and offers_search(args[1]):  # knowledge (§9): search the site, cite [1]
            async for event in stub_turn(
                n, system_instructions, input, question, self._word_seconds
            ):
                yield event
            return
        text = self._answer(question)

        def response(status: str, output: list[Any], usage: ResponseUsage | None) -> Response:
            return Response(
                id=rid, object="response", created_at=0, model="stub", status=status,  # type: ignore[arg-type]
                output=output, parallel_tool_calls=False, tool_choice="auto", tools=[],
                usage=usage,
            )  # fmt: skip

        yield ResponseCreatedEvent(
            type="response.created",
            sequence_number=next(seq),
            response=response("in_progress", [], None),
        )
        search = ResponseFileSearchToolCall(
            id=fs_id, type="file_search_call", status="in_progress", queries=[question[:100]]
        )
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added",
            sequence_number=next(seq),
            output_index=0,
            item=search,
        )
        yield ResponseFileSearchCallInProgressEvent(
            type="response.file_search_call.in_progress", sequence_number=next(seq),
            output_index=0, item_id=fs_id,
        )  # fmt: skip
        yield ResponseFileSearchCallSearchingEvent(
            type="response.file_search_call.searching", sequence_number=next(seq),
            output_index=0, item_id=fs_id,
        )  # fmt: skip
        await asyncio.sleep(_SEARCH_SECONDS)
        yield ResponseFileSearchCallCompletedEvent(
            type="response.file_search_call.completed", sequence_number=next(seq),
            output_index=0, item_id=fs_id,
        )  # fmt: skip
        search = search.model_copy(update={"status": "completed"})
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", sequence_number=next(seq), output_index=0, item=search
        )
        empty = ResponseOutputMessage(
            id=msg_id, type="message", role="assistant", status="in_progress", content=[]
        )
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added", sequence_number=next(seq), output_index=1, item=empty
        )
        part = ResponseOutputText(type="output_text", text="", annotations=[])
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added", sequence_number=next(seq), item_id=msg_id,
            output_index=1, content_index=0, part=part,
        )  # fmt: skip
        words = text.split(" ")
        for i, word in enumerate(words):
            await asyncio.sleep(self._word_seconds)
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta", sequence_number=next(seq), item_id=msg_id,
                output_index=1, content_index=0, delta=word if i == 0 else " " + word,
                logprobs=[],
            )  # fmt: skip
        citation = AnnotationFileCitation(
            type="file_citation", file_id="file_stub", filename=STUB_SOURCE, index=len(text)
        )
        yield ResponseOutputTextAnnotationAddedEvent.model_validate(
            {
                "type": "response.output_text.annotation.added",
                "sequence_number": next(seq),
                "item_id": msg_id,
                "output_index": 1,
                "content_index": 0,
                "annotation_index": 0,
                "annotation": citation.model_dump(),
            }
        )
        yield ResponseTextDoneEvent(
            type="response.output_text.done", sequence_number=next(seq), item_id=msg_id,
            output_index=1, content_index=0, text=text, logprobs=[],
        )  # fmt: skip
        final = ResponseOutputText(type="output_text", text=text, annotations=[citation])
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done", sequence_number=next(seq), item_id=msg_id,
            output_index=1, content_index=0, part=final,
        )  # fmt: skip
        message = empty.model_copy(update={"status": "completed", "content": [final]})
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", sequence_number=next(seq), output_index=1,
            item=message,
        )  # fmt: skip
        asked = len((system_instructions or "").split()) + len(question.split())
        usage = ResponseUsage.model_validate(
            {
                "input_tokens": asked,
                "output_tokens": len(words),
                "total_tokens": asked + len(words),
                # Named for every SDK version the floor admits (newer ones require more).
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
        )
        yield ResponseCompletedEvent(
            type="response.completed", sequence_number=next(seq),
            response=response("completed", [search, message], usage),
        )  # fmt: skip
