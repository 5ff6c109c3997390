"""`--stub-upstream` with knowledge (SPEC §9): the stub model searches the site with the
visitor's message, then answers from the best passage, citing it `[1]`.

Two model calls, as a real model makes them: the first answers with a `search_site`
function call; the Agents SDK runs the tool and calls again with its output, and the
second streams the answer. So the whole path (tool call, progress update, tool output,
`[1]` → URL source) runs offline. The events are the `openai` SDK's own types.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

from agents.items import TResponseInputItem, TResponseStreamEvent
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseContentPartDoneEvent,
    ResponseCreatedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseUsage,
)

from .tool import TOOL_NAME

_WORDS = 40  # of the best passage, quoted in the answer


def offers_search(tools: Any) -> bool:
    """Whether the agent has the site search (the Model's `tools` argument)."""
    return any(getattr(tool, "name", None) == TOOL_NAME for tool in tools or ())


def _search_output(input: str | list[TResponseInputItem]) -> str | None:
    """The site search's output in this turn (after the last user message), if any."""
    if isinstance(input, str):
        return None
    found: str | None = None
    for item in input:
        if not isinstance(item, dict):
            continue
        if item.get("role") == "user":
            found = None
        elif item.get("type") == "function_call_output":
            output = item.get("output")
            found = output if isinstance(output, str) else json.dumps(output)
    return found


def _answer(output: str) -> str:
    if not output.startswith("[1] "):
        return (
            "The site's pages do not seem to cover that. (This is the gateway's stub model: "
            "with an OpenAI key, the policy's model answers here.)"
        )
    block = output.split("\n\n", 1)[0].split("\n")
    title = block[0].removeprefix("[1] ")
    body = [line for line in block[1:] if not line.startswith(("URL: ", "Section: "))]
    words = " ".join(body).split()
    quoted = " ".join(words[:_WORDS]) + (" …" if len(words) > _WORDS else "")
    # A sentence ends with a full stop, after its citation: "… the key. [1]" reads unfinished.
    return f"From the site's page “{title}”: {quoted.rstrip('.')} [1]."


async def stub_turn(
    n: int,
    system_instructions: str | None,
    input: str | list[TResponseInputItem],
    question: str,
    word_seconds: float,
) -> AsyncIterator[TResponseStreamEvent]:
    """One model call of the stub: the search call, or the answer once the search ran."""
    seq = itertools.count()
    rid = f"resp_stub{n}"
    output = _search_output(input)
    items: list[Any] = []

    def response(status: str, usage: ResponseUsage | None) -> Response:
        return Response(
            id=rid, object="response", created_at=0, model="stub", status=status,  # type: ignore[arg-type]
            output=items, parallel_tool_calls=False, tool_choice="auto", tools=[], usage=usage,
        )  # fmt: skip

    yield ResponseCreatedEvent(
        type="response.created", sequence_number=next(seq), response=response("in_progress", None)
    )
    if output is None:
        arguments = json.dumps({"query": " ".join(question.split())[:200] or "help"})
        call = ResponseFunctionToolCall(
            id=f"fc_stub{n}", type="function_call", call_id=f"call_stub{n}", name=TOOL_NAME,
            arguments="", status="in_progress",
        )  # fmt: skip
        at: dict[str, Any] = {"item_id": call.id or "", "output_index": 0}
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added", sequence_number=next(seq), output_index=0, item=call
        )
        yield ResponseFunctionCallArgumentsDeltaEvent(
            type="response.function_call_arguments.delta", sequence_number=next(seq),
            delta=arguments, **at,
        )  # fmt: skip
        yield ResponseFunctionCallArgumentsDoneEvent(
            type="response.function_call_arguments.done", sequence_number=next(seq),
            arguments=arguments, **at,
        )  # fmt: skip
        call = call.model_copy(update={"arguments": arguments, "status": "completed"})
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", sequence_number=next(seq), output_index=0, item=call
        )
        items.append(call)
        said = len(arguments) // 4
    else:
        text = _answer(output)
        msg_id = f"msg_stub{n}"
        empty = ResponseOutputMessage(
            id=msg_id, type="message", role="assistant", status="in_progress", content=[]
        )
        yield ResponseOutputItemAddedEvent(
            type="response.output_item.added", sequence_number=next(seq), output_index=0, item=empty
        )
        at_text: dict[str, Any] = {"item_id": msg_id, "output_index": 0, "content_index": 0}
        yield ResponseContentPartAddedEvent(
            type="response.content_part.added", sequence_number=next(seq),
            part=ResponseOutputText(type="output_text", text="", annotations=[]), **at_text,
        )  # fmt: skip
        words = text.split(" ")
        for i, word in enumerate(words):
            await asyncio.sleep(word_seconds)
            yield ResponseTextDeltaEvent(
                type="response.output_text.delta", sequence_number=next(seq),
                delta=word if i == 0 else " " + word, logprobs=[], **at_text,
            )  # fmt: skip
        yield ResponseTextDoneEvent(
            type="response.output_text.done", sequence_number=next(seq), text=text, logprobs=[],
            **at_text,
        )  # fmt: skip
        final = ResponseOutputText(type="output_text", text=text, annotations=[])
        yield ResponseContentPartDoneEvent(
            type="response.content_part.done", sequence_number=next(seq), part=final, **at_text
        )
        message = empty.model_copy(update={"status": "completed", "content": [final]})
        yield ResponseOutputItemDoneEvent(
            type="response.output_item.done", sequence_number=next(seq), output_index=0,
            item=message,
        )  # fmt: skip
        items.append(message)
        said = len(words)
    asked = (len(system_instructions or "") + len(json.dumps(input, default=str))) // 4
    usage = ResponseUsage.model_validate(
        {
            "input_tokens": asked,
            "output_tokens": said,
            "total_tokens": asked + said,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    )
    yield ResponseCompletedEvent(
        type="response.completed", sequence_number=next(seq), response=response("completed", usage)
    )
