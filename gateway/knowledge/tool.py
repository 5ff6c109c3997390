"""The agent's search of the site's pages (SPEC §9): one function tool, numbered passages.

The model gets the passages as text, numbered on from what this turn has already seen
(`TurnContext.knowledge_hits`), so `[n]` names one passage for the whole answer and
citations.py can turn it into a link. Bounded: the query, each passage, the whole output
and the passages of one turn are capped. A failed search (the store down) is one line
to the model, never an exception: the turn goes on without it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agents import FunctionTool
from agents.tool_context import ToolContext
from chatkit.agents import AgentContext
from chatkit.types import ProgressUpdateEvent

from ..agent.context import TurnContext
from .index import KnowledgeIndex
from .model import Hit

log = logging.getLogger("gateway.knowledge")

TOOL_NAME = "search_site"
MAX_QUERY = 500  # characters of the query searched; the rest is dropped
MAX_TITLE = 200
MAX_HEADING = 300
MAX_PASSAGE = 1500  # characters of one passage's text handed to the model
MAX_OUTPUT = 16_000  # characters of one search's whole output
MAX_TURN_HITS = 60  # passages one turn may collect over all its searches
PROGRESS = ProgressUpdateEvent(icon="search", text="Searching the site…")

UNAVAILABLE = (
    "Search unavailable just now. Answer without it, and say the site could not be searched."
)
NO_QUERY = 'Give the search a query: {"query": "the words to look for"}.'
NOTHING = (
    "No passages of the site match this query. Try other words, or say the site does not cover it."
)
ENOUGH = "This answer has searched enough. Answer from the passages above."

INSTRUCTIONS = f"""\
You can search this website's own pages with the `{TOOL_NAME}` tool. Search it before \
answering a question about the site, what it offers or its documentation; search again \
with other words when the passages do not answer. Each passage comes numbered, like [1], \
with its page's title and URL. Answer from the passages, and cite every passage you use \
by its number in square brackets right after what it supports, like [1] or [2][3] \
(numbers go on across searches within one answer). Cite only numbers you were given, \
and do not write the URLs yourself: the citations become links. When the passages do not \
answer the question, say so rather than guess."""

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {
            "type": "string",
            "description": "What to look for on the site: the question or its key words.",
        }
    },
    "required": ["query"],
    "additionalProperties": False,
}
_DESCRIPTION = (
    "Search this website's pages. Returns numbered passages, best first, each with its "
    "page title and URL; cite them by number, like [1]."
)

IndexSource = Callable[[], Awaitable[KnowledgeIndex]]


def search_tool(
    route: str,
    max_results: int,
    index: IndexSource,
    counted: Callable[[], None],
    *,
    timeout: float,
) -> FunctionTool:
    """The tool for one route: `index` opens (or returns) the route's store's index,
    `counted` counts one search (chatkit_gateway_knowledge_searches_total)."""

    async def invoke(ctx: ToolContext[Any], arguments: str) -> str:
        agent_context = ctx.context
        if not isinstance(agent_context, AgentContext):
            raise TypeError("the knowledge tool runs inside a ChatKit turn")
        turn = agent_context.request_context
        assert isinstance(turn, TurnContext)
        query = _query(arguments)
        if query is None:
            return NO_QUERY
        if len(turn.knowledge_hits) >= MAX_TURN_HITS:
            return ENOUGH
        counted()
        await agent_context.stream(PROGRESS)
        limit = min(max_results, MAX_TURN_HITS - len(turn.knowledge_hits))
        try:
            async with asyncio.timeout(timeout):
                hits = await (await index()).search(route, query, limit)
        except Exception as exc:  # the store down or slow: the answer goes on without it
            log.warning("knowledge search failed: %s (route %s)", type(exc).__name__, route)
            return UNAVAILABLE
        output, shown = render(hits[:limit], len(turn.knowledge_hits) + 1)
        turn.knowledge_hits.extend(shown)
        # The model reads it next: part of the turn's input, charged when no usage comes.
        turn.estimated_input += len(output) // 4
        return output

    return FunctionTool(
        name=TOOL_NAME,
        description=_DESCRIPTION,
        params_json_schema=_SCHEMA,
        on_invoke_tool=invoke,
        strict_json_schema=True,
    )


def _query(arguments: str) -> str | None:
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return None
    value = parsed.get("query") if isinstance(parsed, dict) else None
    if not isinstance(value, str):
        return None
    query = " ".join(value[: MAX_QUERY * 2].split())[:MAX_QUERY]
    return query or None


def render(hits: list[Hit], first: int) -> tuple[str, list[Hit]]:
    """The passages as the model reads them, numbered from `first`, within MAX_OUTPUT;
    returns the text and the hits it shows (a hit that does not fit is left out)."""
    if not hits:
        return NOTHING, []
    blocks: list[str] = []
    shown: list[Hit] = []
    size = 0
    for n, hit in enumerate(hits, start=first):
        lines = [f"[{n}] {_cut(hit.title, MAX_TITLE) or hit.url}", f"URL: {hit.url}"]
        if hit.heading:
            lines.append(f"Section: {_cut(hit.heading, MAX_HEADING)}")
        lines.append(_cut(hit.text, MAX_PASSAGE))
        block = "\n".join(lines)
        if size + len(block) + 2 > MAX_OUTPUT and shown:
            break
        blocks.append(block[:MAX_OUTPUT])
        shown.append(hit)
        size += len(block) + 2
    return "\n\n".join(blocks), shown


def _cut(text: str, most: int) -> str:
    """At most `most` characters, cut at a word when there is one near the end."""
    text = text.strip()
    if len(text) <= most:
        return text
    head = text[: most - 1]
    space = head.rfind(" ")
    return (head[:space] if space > most * 3 // 4 else head).rstrip() + "…"
