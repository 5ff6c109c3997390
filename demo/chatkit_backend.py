"""A tiny self-hosted ChatKit server for the proxy demo: it echoes each message word by word.

    .venv/bin/python demo/chatkit_backend.py [--port 8001] [--delay 0.15]

Built on the openai-chatkit SDK's ChatKitServer with threads kept in memory (the store of
examples/chatkit_server): no model, no API key. `make run` starts it when the policy has a
chatkit_proxy route whose target is http://127.0.0.1:8001/chatkit (see README, "Demo
pages"), so demo/proxy.html has something to talk to through the gateway.
tests/test_browser.py drives the same server, pacing each event with a semaphore instead of
a delay.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from pathlib import Path

from aiohttp import web
from chatkit.server import ChatKitServer, StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from pydantic import ValidationError

# Run as a script (`make run`), sys.path[0] is demo/; the repo root makes examples/ importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.chatkit_server.store import Context, MemoryStore
from examples.chatkit_server.streaming import EVENT_STREAM, event_stream

# The store keeps threads per user: the gateway's X-ChatKit-User (the page's X-Device-Id,
# hashed). A request without one — the demo page called directly with --cors-origin, or a
# page that sends no X-Device-Id — shares the "anonymous" namespace: acceptable for an
# echo demo with nothing to leak; examples/chatkit_server refuses such requests instead.
USER_HEADER = "X-ChatKit-User"


def visitor(request: web.Request) -> Context:
    return {"user": request.headers.get(USER_HEADER) or "anonymous"}


class EchoServer(ChatKitServer[Context]):
    """Answers "Echo:" and the user's words, one event at a time.

    Between events it waits `delay` seconds, or — when `gate` is given — for one
    `gate.release()`, so a test decides exactly when each event may leave.
    """

    def __init__(self, *, delay: float = 0.15, gate: asyncio.Semaphore | None = None) -> None:
        super().__init__(MemoryStore())
        self.delay = delay
        self.gate = gate
        self.seen: list[str] = []  # the `type` of every request, in order
        self.abandoned = 0  # streams whose client went away before the end

    async def _pace(self) -> None:
        if self.gate is not None:
            await self.gate.acquire()
        elif self.delay > 0:
            await asyncio.sleep(self.delay)

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Context
    ) -> AsyncIterator[ThreadStreamEvent]:
        text = ""
        if input_user_message is not None:
            text = " ".join(getattr(c, "text", "") for c in input_user_message.content)
        deltas = ["Echo:", *(f" {word}" for word in text.split())]
        item = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(),
            content=[AssistantMessageContent(text="")],
        )
        await self._pace()
        yield ThreadItemAddedEvent(item=item)
        for delta in deltas:
            await self._pace()
            yield ThreadItemUpdatedEvent(
                item_id=item.id,
                update=AssistantMessageContentPartTextDelta(content_index=0, delta=delta),
            )
        await self._pace()
        text_done = AssistantMessageContent(text="".join(deltas))
        yield ThreadItemDoneEvent(item=item.model_copy(update={"content": [text_done]}))


def make_app(
    server: EchoServer, *, path: str = "/chatkit", cors_origins: Iterable[str] = ()
) -> web.Application:
    """The ChatKit endpoint at `path`. `cors_origins` lets pages call it directly, without
    the gateway (the gateway itself needs none of it)."""
    allowed = frozenset(cors_origins)

    async def endpoint(request: web.Request) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        cors = (
            {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin in allowed else {}
        )
        if request.method == "OPTIONS":
            allow = {"Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Headers": "*"}
            return web.Response(status=204, headers={**cors, **allow} if cors else {})
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST", "OPTIONS"])
        raw = await request.read()
        try:
            kind = json.loads(raw).get("type")
            server.seen.append(kind if isinstance(kind, str) else "?")
            result = await server.process(raw, visitor(request))
        except (ValueError, AttributeError, ValidationError, NotFoundError) as exc:
            error = {"error": {"code": "bad_request", "message": type(exc).__name__}}
            return web.json_response(error, status=400, headers=cors)
        if not isinstance(result, StreamingResult):
            return web.Response(body=result.json, content_type="application/json", headers=cors)
        response = await event_stream(request, {**cors, **EVENT_STREAM})
        try:
            async for chunk in result:
                await response.write(chunk)
        except (ConnectionError, asyncio.CancelledError) as exc:
            server.abandoned += 1  # the client went away (behind a proxy: the proxy did)
            if isinstance(exc, asyncio.CancelledError):
                raise  # aiohttp cancels a handler whose client disconnected
            return response
        except Exception as exc:  # e.g. a thread id this (restarted) backend never saw
            event = {"type": "error", "code": "stream.error", "message": type(exc).__name__}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", path, endpoint)
    return app


async def serve(host: str, port: int, delay: float, cors_origins: list[str]) -> None:
    runner = web.AppRunner(
        make_app(EchoServer(delay=delay), cors_origins=cors_origins),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    print(f"demo ChatKit backend on http://{host}:{port}/chatkit", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--delay", type=float, default=0.15, help="seconds between events")
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="let pages on this origin call the backend directly (repeatable)",
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.delay, args.cors_origin))


if __name__ == "__main__":
    main()
