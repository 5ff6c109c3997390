"""Thread items to model input, attachments included: images as input images, PDFs (and
other files) as input files, both inline from the store — nothing is uploaded to OpenAI.

Inline bytes are the turn's biggest cost (memory three times over: the bytes, their
base64, the request), and history would repeat them every turn. So a turn sends at most
`attachments.max_bytes_per_turn` of them: newest message first, each attachment once
(its newest mention); the rest become a line of text naming the file, which the model
already answered about when it saw it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from agents import TResponseInputItem
from chatkit.agents import ThreadItemConverter
from chatkit.store import NotFoundError
from chatkit.types import Attachment, ImageAttachment, ThreadItem, UserMessageItem
from openai.types.responses import ResponseInputContentParam

from .attachment_store import SqlAttachmentStore
from .context import TurnContext


class AttachmentConverter(ThreadItemConverter):
    """One per turn: attachments are read as the turn's user."""

    def __init__(self, store: SqlAttachmentStore, context: TurnContext) -> None:
        self._store = store
        self._context = context
        self._send: set[tuple[str, str]] = set()  # (message id, attachment id): inline
        self._message = ""

    async def to_agent_input(
        self, thread_items: Sequence[ThreadItem] | ThreadItem
    ) -> list[TResponseInputItem]:
        items = list(thread_items) if isinstance(thread_items, Sequence) else [thread_items]
        await self._plan(items)
        return await super().to_agent_input(items)

    async def _plan(self, items: list[ThreadItem]) -> None:
        """Which attachments go inline: newest first, once each, within the turn's cap."""
        messages = [i for i in reversed(items) if isinstance(i, UserMessageItem)]
        ids = list(dict.fromkeys(a.id for m in messages for a in m.attachments))
        sizes = await self._store.attachment_sizes(ids, self._context) if ids else {}
        config = self._context.attachments
        room = config.max_bytes_per_turn if config is not None else 0
        seen: set[str] = set()
        for message in messages:
            for attachment in message.attachments:
                size = sizes.get(attachment.id)
                if attachment.id in seen or size is None or size > room:
                    continue
                seen.add(attachment.id)
                room -= size
                self._send.add((message.id, attachment.id))

    async def user_message_to_input(
        self, item: UserMessageItem, is_last_message: bool = True
    ) -> TResponseInputItem | list[TResponseInputItem] | None:
        self._message = item.id  # whose attachments the calls below convert
        return await super().user_message_to_input(item, is_last_message)

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        if (self._message, attachment.id) not in self._send:
            return _placeholder(attachment, "not sent again in this turn")
        try:
            _, content = await self._store.load_attachment_content(attachment.id, self._context)
        except NotFoundError:  # deleted since the plan
            content = None
        if content is None:
            return _placeholder(attachment, "not available")
        self._context.attachment_bytes += len(content)
        encoded = base64.b64encode(content).decode("ascii")
        del content
        if isinstance(attachment, ImageAttachment) or attachment.mime_type.startswith("image/"):
            return {
                "type": "input_image",
                "image_url": f"data:{attachment.mime_type};base64,{encoded}",
                "detail": "auto",
            }
        return {
            "type": "input_file",
            "filename": attachment.name,
            "file_data": f"data:{attachment.mime_type};base64,{encoded}",
        }


def _placeholder(attachment: Attachment, why: str) -> ResponseInputContentParam:
    return {"type": "input_text", "text": f"[attachment {attachment.name!r}: {why}]"}
