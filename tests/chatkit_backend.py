"""A real ChatKit server (openai-chatkit's ChatKitServer) for the proxy tests; no model.

`respond()` streams an assistant message in a few deltas. It first waits on `gate`, so a
test can prove that events reach it *while* the backend is still working: it sets the
gate only after it has received the first events through the gateway. Everything the
backend is sent is recorded in `seen`, and a cancelled stream sets `cancelled`.

Next to the ChatKit endpoint, a few misbehaving routes for the failure paths: a stream
that dies after a whole event or in the middle of one, a slow answer, a 500 page.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError, Store
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    Page,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

Context = dict[str, Any]
WORDS = ("Hello", " from", " the", " backend.")


class MemoryStore(Store[Context]):
    """Threads and items in dicts: enough of the Store contract for the server's flows."""

    def __init__(self) -> None:
        self.threads: dict[str, ThreadMetadata] = {}
        self.items: dict[str, list[ThreadItem]] = {}
        self.attachments: dict[str, Attachment] = {}

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        if thread_id not in self.threads:
            raise NotFoundError(thread_id)
        return self.threads[thread_id]

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        self.threads[thread.id] = ThreadMetadata(**thread.model_dump())
        self.items.setdefault(thread.id, [])

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        items = list(self.items.get(thread_id, []))
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [i.id for i in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        return Page(data=items[:limit], has_more=len(items) > limit)

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        self.attachments[attachment.id] = attachment

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        return self.attachments[attachment_id]

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        self.attachments.pop(attachment_id, None)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        threads = sorted(self.threads.values(), key=lambda t: t.created_at)
        if order == "desc":
            threads.reverse()
        return Page(data=threads[:limit], has_more=len(threads) > limit)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        self.items.setdefault(thread_id, []).append(item)

    async def save_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        items = self.items.setdefault(thread_id, [])
        for i, old in enumerate(items):
            if old.id == item.id:
                items[i] = item
                return
        items.append(item)

    async def load_item(self, thread_id: str, item_id: str, context: Context) -> ThreadItem:
        for item in self.items.get(thread_id, []):
            if item.id == item_id:
                return item
        raise NotFoundError(item_id)

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        self.threads.pop(thread_id, None)
        self.items.pop(thread_id, None)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Context) -> None:
        self.items[thread_id] = [i for i in self.items.get(thread_id, []) if i.id != item_id]


class ScriptedServer(ChatKitServer[Context]):
    """Answers every message with WORDS, one delta each, after `gate` opens."""

    def __init__(self) -> None:
        super().__init__(MemoryStore())
        self.gate = asyncio.Event()
        self.gate.set()
        self.responding = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Context
    ) -> AsyncIterator[ThreadStreamEvent]:
        item_id = self.store.generate_item_id("message", thread, context)
        item = AssistantMessageItem(
            id=item_id, thread_id=thread.id, created_at=datetime.now(), content=[]
        )
        yield ThreadItemAddedEvent(item=item)
        self.responding.set()
        await self.gate.wait()
        for word in WORDS:
            await asyncio.sleep(0.005)
            update = AssistantMessageContentPartTextDelta(content_index=0, delta=word)
            yield ThreadItemUpdatedEvent(item_id=item_id, update=update)
        done = item.model_copy(update={"content": [AssistantMessageContent(text="".join(WORDS))]})
        yield ThreadItemDoneEvent(item=done)

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: Context
    ) -> None:
        self.cancelled.set()
        await super().handle_stream_cancelled(thread, pending_items, context)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Backend:
    server: ScriptedServer
    url: str  # http://127.0.0.1:port
    seen: list[Seen] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _chatkit(request: web.Request) -> web.StreamResponse:
    result = await request.app[SERVER].process(await request.read(), {})
    if not isinstance(result, StreamingResult):
        return web.Response(body=result.json, content_type="application/json")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    async for chunk in result:
        await response.write(chunk)
    await response.write_eof()
    return response


async def _upload(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"], "bytes": len(await request.read())})


async def _broken(request: web.Request) -> web.StreamResponse:
    """A stream that dies after a whole event (`whole`) or halfway through one (`half`)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b'data: {"type":"progress_update","text":"one"}\n\n')
    if request.match_info["mode"] == "half":
        await response.write(b'data: {"type":"progress_upd')
    await asyncio.sleep(0.05)  # let the gateway relay what it got before the line drops
    assert request.transport is not None
    request.transport.close()
    return response


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.json_response({})


async def _cookie(request: web.Request) -> web.Response:
    response = web.json_response({})
    response.set_cookie("backend", "1", path="/")
    return response


async def _error(request: web.Request) -> web.Response:
    return web.Response(status=500, text="Traceback (most recent call last): secret=sk-leak")


SERVER = web.AppKey("server", ScriptedServer)
SEEN = web.AppKey("seen", list[Seen])


@web.middleware
async def _record(request: web.Request, handler: Any) -> web.StreamResponse:
    body = await request.read()
    request.app[SEEN].append(Seen(request.raw_path, dict(request.headers), body))
    response: web.StreamResponse = await handler(request)
    return response


@contextlib.asynccontextmanager
async def running_backend() -> AsyncIterator[Backend]:
    """The ChatKit server on 127.0.0.1 at a free port, with handler cancellation on, as
    an ASGI server would cancel on disconnect."""
    server = ScriptedServer()
    app = web.Application(middlewares=[_record])
    app[SERVER] = server
    seen: list[Seen] = []
    app[SEEN] = seen
    app.router.add_post("/chatkit", _chatkit)
    app.router.add_post("/chatkit/upload/{id}", _upload)
    app.router.add_post("/broken/{mode}", _broken)
    app.router.add_post("/slow", _slow)
    app.router.add_post("/error", _error)
    app.router.add_post("/cookie", _cookie)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Backend(server, f"http://127.0.0.1:{port}", seen)
    finally:
        server.gate.set()  # a failed test must not leave a handler parked for shutdown
        await runner.cleanup()
