"""A real ChatKit server (openai-chatkit's ChatKitServer) for the proxy tests; no model.
Threads live in the example server's in-memory store (examples/chatkit_server/store.py).

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
from chatkit.server import ChatKitServer
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from examples.chatkit_server.store import Context, MemoryStore
from examples.chatkit_server.streaming import chatkit_response, event_stream

WORDS = ("Hello", " from", " the", " backend.")
VISITOR: Context = {"user": "anonymous"}  # one visitor: the store keeps threads per user
# Without Cache-Control: test_proxy checks that the gateway adds it to a stream itself.
STREAM_HEADERS = {"Content-Type": "text/event-stream"}


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
    result = await request.app[SERVER].process(await request.read(), VISITOR)
    return await chatkit_response(request, result, stream_headers=STREAM_HEADERS)


async def _upload(request: web.Request) -> web.Response:
    return web.json_response({"id": request.match_info["id"], "bytes": len(await request.read())})


async def _broken(request: web.Request) -> web.StreamResponse:
    """A stream that dies after a whole event (`whole`) or halfway through one (`half`)."""
    response = await event_stream(request, STREAM_HEADERS)
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
