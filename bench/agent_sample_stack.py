"""OpenAI's own sample stack for a self-hosted ChatKit server, as bench/agent_bench.py's
baseline: FastAPI on uvicorn, openai-chatkit's `ChatKitServer` with an in-memory store of
the kind the official samples use, and an Agents SDK agent on `OpenAIResponsesModel`.

Run: python -m bench.agent_sample_stack PORT UPSTREAM_BASE_URL [--api-key KEY] [--http auto]

Written here from the SDK's interfaces, in the samples' shape: POST /chatkit hands the body
to `server.process`, a `StreamingResult` becomes `StreamingResponse(media_type=
"text/event-stream")`, anything else JSON; `respond()` loads the thread's recent items,
converts them with the SDK's `ThreadItemConverter`, runs `Runner.run_streamed` and relays
`stream_agent_response`. uvicorn runs with its defaults (`loop="auto"`: uvloop when it is
installed; `http="auto"`: httptools when installed, as the samples' `uvicorn[standard]`
has it, else h11; the access log on). It has no origin check, limits, persistence,
budgets or metrics. Agents SDK tracing is off (the gateway turns it off too; the samples
leave it on, and here it would only fail to export).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    Attachment,
    Page,
    ThreadItem,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from openai import AsyncOpenAI

from bench.agent_upstream import API_KEY

MODEL = "gpt-6.1-terra"
INSTRUCTIONS = "You are the assistant of this site. Answer briefly."
HISTORY_ITEMS = 30  # the gateway's default `history_items`

Context = dict[str, Any]


@dataclasses.dataclass
class _Thread:
    meta: ThreadMetadata
    items: list[ThreadItem] = dataclasses.field(default_factory=list)


def _page(rows: list[Any], after: str | None, limit: int, order: str) -> Page[Any]:
    """One page of `rows` (oldest first) in `order`, starting after the row whose id is
    `after`."""
    ordered = list(reversed(rows)) if order == "desc" else rows
    start = 0
    if after is not None:
        start = next((i + 1 for i, row in enumerate(ordered) if row.id == after), len(ordered))
    chunk = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return Page(data=chunk, has_more=more, after=chunk[-1].id if chunk and more else None)


class MemoryStore(Store[Context]):
    """Threads, items and attachment metadata in dicts, for one process's life. What it
    hands out and takes in is copied, so a caller changing an object later does not change
    what is stored."""

    def __init__(self) -> None:
        self._threads: dict[str, _Thread] = {}
        self._attachments: dict[str, Attachment] = {}

    def _thread(self, thread_id: str) -> _Thread:
        found = self._threads.get(thread_id)
        if found is None:
            raise NotFoundError(f"thread {thread_id} not found")
        return found

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        return self._thread(thread_id).meta.model_copy(deep=True)

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        meta = ThreadMetadata.model_validate(thread.model_dump())  # metadata only, no items
        found = self._threads.get(thread.id)
        if found is None:
            self._threads[thread.id] = _Thread(meta)
        else:
            found.meta = meta

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        rows = sorted((t.meta for t in self._threads.values()), key=lambda m: m.created_at)
        page: Page[ThreadMetadata] = _page(rows, after, limit, order)
        page.data = [m.model_copy(deep=True) for m in page.data]
        return page

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        self._threads.pop(thread_id, None)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        page: Page[ThreadItem] = _page(self._thread(thread_id).items, after, limit, order)
        page.data = [item.model_copy(deep=True) for item in page.data]
        return page

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        await self.save_item(thread_id, item, context)

    async def save_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        items = self._thread(thread_id).items
        copy = item.model_copy(deep=True)
        for i, existing in enumerate(items):
            if existing.id == item.id:
                items[i] = copy
                return
        items.append(copy)

    async def load_item(self, thread_id: str, item_id: str, context: Context) -> ThreadItem:
        for item in self._thread(thread_id).items:
            if item.id == item_id:
                return item.model_copy(deep=True)
        raise NotFoundError(f"item {item_id} not found")

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Context) -> None:
        thread = self._thread(thread_id)
        thread.items = [item for item in thread.items if item.id != item_id]

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        self._attachments[attachment.id] = attachment.model_copy(deep=True)

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        found = self._attachments.get(attachment_id)
        if found is None:
            raise NotFoundError(f"attachment {attachment_id} not found")
        return found.model_copy(deep=True)

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        self._attachments.pop(attachment_id, None)


class SampleServer(ChatKitServer[Context]):
    def __init__(self, store: MemoryStore, agent: Agent[AgentContext[Context]]) -> None:
        super().__init__(store)
        self.agent = agent
        self.converter = ThreadItemConverter()

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Context
    ) -> AsyncIterator[ThreadStreamEvent]:
        recent = await self.store.load_thread_items(thread.id, None, HISTORY_ITEMS, "desc", context)
        agent_input = await self.converter.to_agent_input(list(reversed(recent.data)))
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        result = Runner.run_streamed(self.agent, agent_input, context=agent_context)
        async for event in stream_agent_response(agent_context, result):
            yield event


def make_app(base_url: str, api_key: str = API_KEY) -> FastAPI:
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=base_url, api_key=api_key)
    agent = Agent[AgentContext[Context]](
        name="assistant",
        instructions=INSTRUCTIONS,
        model=OpenAIResponsesModel(model=MODEL, openai_client=client),
    )
    server = SampleServer(MemoryStore(), agent)
    app = FastAPI(title="ChatKit sample stack (bench)")

    @app.post("/chatkit")
    async def chatkit(request: Request) -> Response:
        result = await server.process(await request.body(), {"request": request})
        if isinstance(result, StreamingResult):
            return StreamingResponse(result, media_type="text/event-stream")
        return Response(content=result.json, media_type="application/json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("upstream", help="the Responses API base URL, e.g. http://…/v1")
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    args = parser.parse_args()
    app = make_app(args.upstream, args.api_key)
    uvicorn.run(app, host="127.0.0.1", port=args.port, http=args.http)


if __name__ == "__main__":
    main()
