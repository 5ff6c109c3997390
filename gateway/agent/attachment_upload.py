"""The upload (phase two) of a `chatkit_agent` route's attachments: the bytes POSTed to
the signed URL `attachments.create` answered with (attachment_admission.py)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from aiohttp import BodyPartReader, web
from chatkit.store import NotFoundError

from ..errors import BadRequest, NotFound, PayloadTooLarge
from .attachment_admission import token
from .attachment_store import SqlAttachmentStore
from .config import AttachmentsConfig
from .context import TurnContext


async def _read_upload(request: web.Request, limit: int) -> bytes:
    """The file's bytes, from a multipart `file` part or the raw body, within `limit` (a
    declared length over it was refused before any limit was spent: serving.py)."""
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name == "file":
                return await _capped(part.read_chunk, limit)
        raise BadRequest("multipart upload without a `file` part")
    return await _capped(request.content.read, limit)


async def _capped(read: Callable[[int], object], limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await read(65536)  # type: ignore[misc]
        if not chunk:
            return b"".join(chunks)
        assert isinstance(chunk, bytes | bytearray)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        chunks.append(bytes(chunk))


def signed_user(request: web.Request, key: bytes, attachment_id: str) -> str:
    """The user an upload URL was made for, if its token is right (else 404, as unknown)."""
    user = request.query.get("u", "")
    given = request.query.get("t", "")
    if not user or not hmac.compare_digest(given, token(key, user, attachment_id)):
        raise NotFound()
    return user


async def handle_attachment(
    request: web.Request,
    store: SqlAttachmentStore,
    config: AttachmentsConfig,
    context: TurnContext,
    attachment_id: str,
) -> web.StreamResponse:
    """Phase two of an upload (the preview, its GET: preview.py). `context.user` is the
    URL's signed user (`signed_user`)."""
    try:
        attachment, size = await store.load_attachment_size(attachment_id, context)
    except NotFoundError:
        raise NotFound() from None
    if size is not None:
        raise BadRequest("This attachment was uploaded already")
    data = await _read_upload(request, config.max_bytes)
    await store.put_attachment_content(attachment, data, context)
    done = attachment.model_copy(update={"upload_descriptor": None})
    return web.json_response(text=done.model_dump_json(exclude_none=True))
