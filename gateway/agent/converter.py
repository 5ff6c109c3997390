"""Thread items to model input, attachments included: images as input images, PDFs (and
other files) as input files, both inline from the store — nothing is uploaded to OpenAI."""

from __future__ import annotations

import base64

from chatkit.agents import ThreadItemConverter
from chatkit.types import Attachment, ImageAttachment
from openai.types.responses import ResponseInputContentParam

from .context import TurnContext
from .store import SqlStore


class AttachmentConverter(ThreadItemConverter):
    """One per turn: attachments are read as the turn's user."""

    def __init__(self, store: SqlStore, context: TurnContext) -> None:
        self._store = store
        self._context = context

    async def attachment_to_message_content(
        self, attachment: Attachment
    ) -> ResponseInputContentParam:
        _, content = await self._store.load_attachment_content(attachment.id, self._context)
        if content is None:  # announced, never uploaded
            return {"type": "input_text", "text": f"[{attachment.name}: not uploaded]"}
        encoded = base64.b64encode(content).decode("ascii")
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
