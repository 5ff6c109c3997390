"""A small self-hosted ChatKit server (openai-chatkit) to put behind the gateway's proxy route.

    .venv/bin/python examples/chatkit_server/server.py --port 8002

With OPENAI_API_KEY set, answers come from an OpenAI Agents SDK agent; without it, the
server echoes each message back word by word (no model call), which is enough to try
the widget, the gateway and streaming end to end. See README.md next to this file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import json
import logging
import os
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from chatkit.agents import AgentContext, ThreadItemConverter, stream_agent_response
from chatkit.server import ChatKitServer
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageContentPartTextDelta,
    AssistantMessageItem,
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)
from pydantic import AnyUrl, ValidationError

if TYPE_CHECKING or __package__:  # python -m examples.chatkit_server.server; and mypy
    from .store import Context, MemoryFiles, MemoryStore
    from .streaming import chatkit_response
else:  # python examples/chatkit_server/server.py: this folder is sys.path[0]
    from store import Context, MemoryFiles, MemoryStore
    from streaming import chatkit_response

log = logging.getLogger("chatkit_server")
HISTORY = 30  # thread items sent to the model per turn


class Files(MemoryFiles):
    async def create_attachment(
        self, input: AttachmentCreateParams, context: Context
    ) -> Attachment:
        """Two-phase upload: the widget gets an upload URL below the gateway's route."""
        attachment_id = self.generate_attachment_id(input.mime_type, context)
        return FileAttachment(
            id=attachment_id,
            name=input.name,
            mime_type=input.mime_type,
            upload_descriptor=AttachmentUploadDescriptor(
                url=AnyUrl(f"{self.upload_base_url}/upload/{attachment_id}"), method="POST"
            ),
        )


class Converter(ThreadItemConverter):
    def __init__(self, files: Files) -> None:
        self.files = files

    async def attachment_to_message_content(self, attachment: Attachment) -> Any:
        data = self.files.blobs.get(attachment.id, b"")
        if attachment.mime_type.startswith("image/") and data:
            url = f"data:{attachment.mime_type};base64,{base64.b64encode(data).decode()}"
            return {"type": "input_image", "image_url": url, "detail": "auto"}
        return {"type": "input_text", "text": f"[attached: {attachment.name}, {len(data)} bytes]"}


class Assistant(ChatKitServer[Context]):
    def __init__(self, store: MemoryStore, files: Files, agent: Any | None) -> None:
        super().__init__(store, files)
        self.files = files
        self.agent = agent
        self.converter = Converter(files)

    async def respond(
        self, thread: ThreadMetadata, input_user_message: UserMessageItem | None, context: Context
    ) -> AsyncIterator[ThreadStreamEvent]:
        if self.agent is None:
            async for event in self._echo(thread, input_user_message, context):
                yield event
            return
        from agents import Runner

        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)
        page = await self.store.load_thread_items(thread.id, None, HISTORY, "desc", context)
        history = await self.converter.to_agent_input(page.data[::-1])
        result = Runner.run_streamed(self.agent, history, context=agent_context)
        async for event in stream_agent_response(agent_context, result):
            yield event

    async def _echo(
        self, thread: ThreadMetadata, message: UserMessageItem | None, context: Context
    ) -> AsyncIterator[ThreadStreamEvent]:
        """No model: stream the user's words back, to show events arriving one by one."""
        said = " ".join(getattr(c, "text", "") for c in (message.content if message else []))
        words = f"You said: {said or '(nothing)'}".split()
        item_id = self.store.generate_item_id("message", thread, context)
        item = AssistantMessageItem(
            id=item_id, thread_id=thread.id, created_at=datetime.now(), content=[]
        )
        yield ThreadItemAddedEvent(item=item)
        part = AssistantMessageContentPartAdded(
            content_index=0, content=AssistantMessageContent(text="")
        )
        yield ThreadItemUpdatedEvent(item_id=item_id, update=part)
        for word in words:
            await asyncio.sleep(0.08)
            delta = AssistantMessageContentPartTextDelta(content_index=0, delta=word + " ")
            yield ThreadItemUpdatedEvent(item_id=item_id, update=delta)
        text = AssistantMessageContent(text=" ".join(words))
        yield ThreadItemDoneEvent(item=item.model_copy(update={"content": [text]}))


SERVER = web.AppKey("server", Assistant)
BACKEND_KEY = web.AppKey("backend_key", str)


# Who the visitor is, as the gateway's chatkit_proxy route says: `u_` + a keyed hash of
# the page's X-Device-Id (or of a trusted auth proxy's header). Never the raw device id.
USER_HEADER = "X-ChatKit-User"
_USER = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _refuse(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    body = json.dumps({"error": {"code": code, "message": message}})
    return status(text=body, content_type="application/json")


def context_of(request: web.Request) -> Context:
    """Whose threads these are: the gateway's X-ChatKit-User, one store namespace each.
    Without it there is no one to file threads under, so nothing is served: sharing one
    "anonymous" namespace would show every visitor everyone's history. A real backend
    with logins would verify its own session (Cookie, Authorization) here instead."""
    expected = request.app[BACKEND_KEY]
    if expected and not hmac.compare_digest(request.headers.get("X-Backend-Key", ""), expected):
        raise _refuse(web.HTTPUnauthorized, "not_from_gateway", "not from the gateway")
    user = request.headers.get(USER_HEADER, "")
    if not _USER.fullmatch(user):
        raise _refuse(
            web.HTTPBadRequest,
            "no_user",
            f"no {USER_HEADER}: the page must send an X-Device-Id header (16-128 "
            "characters of A-Z a-z 0-9 _ -, kept in localStorage) through the gateway",
        )
    return {"user": user}


async def chatkit(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    try:
        result = await request.app[SERVER].process(await request.read(), context)
    except ValidationError:
        raise _refuse(web.HTTPBadRequest, "bad_request", "not a ChatKit request") from None
    except NotFoundError:
        raise _refuse(web.HTTPNotFound, "not_found", "not found") from None
    return await chatkit_response(request, result)


async def _bytes_of(request: web.Request) -> bytes:
    """The file of a multipart form (what the widget sends), or a raw body."""
    if not request.content_type.startswith("multipart/"):
        return await request.read()
    form = await request.post()
    for value in form.values():
        if isinstance(value, web.FileField):
            return value.file.read()
    raise _refuse(web.HTTPBadRequest, "bad_request", "no file in the form")


async def upload(request: web.Request) -> web.Response:
    """POST …/upload/{id}: the second phase of a two-phase upload (the bytes)."""
    context = context_of(request)
    server = request.app[SERVER]
    attachment_id = request.match_info["id"]
    try:
        attachment = await server.store.load_attachment(attachment_id, context)
    except NotFoundError:
        raise _refuse(web.HTTPNotFound, "not_found", "unknown attachment") from None
    server.files.blobs[attachment_id] = await _bytes_of(request)
    done = attachment.model_copy(update={"upload_descriptor": None})
    await server.store.save_attachment(done, context)
    return web.json_response({})


def build_app(agent: Any | None, backend_key: str, upload_base_url: str) -> web.Application:
    app = web.Application(client_max_size=10 * 1024 * 1024)
    store = MemoryStore()
    app[SERVER] = Assistant(store, Files(upload_base_url), agent)
    app[BACKEND_KEY] = backend_key
    app.router.add_post("/chatkit", chatkit)
    app.router.add_post("/chatkit/upload/{id}", upload)
    return app


def build_agent() -> Any | None:
    if not os.environ.get("OPENAI_API_KEY"):
        log.warning("OPENAI_API_KEY is not set: echo mode, no model is called")
        return None
    from agents import Agent

    return Agent(
        name="Assistant",
        instructions="You are a concise, friendly assistant for this website's visitors.",
        model=os.environ.get("CHATKIT_MODEL", "gpt-4.1-mini"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    app = build_app(
        build_agent(),
        os.environ.get("CHATKIT_BACKEND_KEY", ""),
        # Where the *browser* reaches this server: through the gateway's route.
        os.environ.get("CHATKIT_PUBLIC_URL", "http://localhost:8080/chatkit"),
    )
    # handler_cancellation: when the gateway hangs up (the user left), stop the model run.
    web.run_app(app, host=args.host, port=args.port, handler_cancellation=True)


if __name__ == "__main__":
    main()
