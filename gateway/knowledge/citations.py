"""`[n]` in the finished answer → a ChatKit URL source (SPEC §9): links to the site's pages.

The model cites the numbered passages of this turn's searches (tool.py); when its message
is done, before the SDK saves and sends it, every `[n]` (or `[n, m]`) that names a passage
gets an annotation `{"type": "url", "url", "title"}` at the marker's index in the text. A
number that names no passage is left alone, and so is a markdown link's `[n](…)`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence

from chatkit.types import (
    Annotation,
    AssistantMessageContent,
    AssistantMessageItem,
    ThreadItemDoneEvent,
    ThreadStreamEvent,
    URLSource,
)

from ..agent.context import TurnContext
from .model import Hit

_MARK = re.compile(r"\[(\d{1,4}(?:\s*,\s*\d{1,4}){0,9})\](?!\()")


async def cite(
    events: AsyncIterator[ThreadStreamEvent], turn: TurnContext
) -> AsyncIterator[ThreadStreamEvent]:
    """The turn's events, its finished assistant messages annotated from its searches."""
    async with contextlib.aclosing(events):  # type: ignore[type-var]
        async for event in events:
            if (
                turn.knowledge_hits
                and isinstance(event, ThreadItemDoneEvent)
                and isinstance(event.item, AssistantMessageItem)
            ):
                event = ThreadItemDoneEvent(item=annotate(event.item, turn.knowledge_hits))
            yield event


def annotate(item: AssistantMessageItem, hits: Sequence[Hit]) -> AssistantMessageItem:
    content = [_content(part, hits) for part in item.content]
    return item.model_copy(update={"content": content})


def _content(part: AssistantMessageContent, hits: Sequence[Hit]) -> AssistantMessageContent:
    added: list[Annotation] = []
    for mark in _MARK.finditer(part.text):
        for number in mark.group(1).split(","):
            n = int(number)
            if 1 <= n <= len(hits):
                hit = hits[n - 1]
                source = URLSource(url=hit.url, title=hit.title or hit.url)
                added.append(Annotation(source=source, index=mark.start()))
    if not added:
        return part
    end = len(part.text)
    ordered = sorted([*part.annotations, *added], key=lambda a: end if a.index is None else a.index)
    return part.model_copy(update={"annotations": ordered})
