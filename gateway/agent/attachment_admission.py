"""Attachments of a `chatkit_agent` route: what `attachments.create` admits, and the
signed upload URL it answers with (the upload itself: attachment_upload.py).

The SDK's two-phase upload, to URLs below the route.

`attachments.create` (JSON, through the SDK) checks the type, the announced size and the
user's count, and answers with an upload URL `<route>/attachments/<id>?t=<token>`; the
bytes are POSTed there (multipart `file`, or the raw body), counted against `max_bytes`
as they arrive. The token is a keyed hash of the user and the id, so the URL works only
for the attachment it names, and an image's preview (a GET of the same URL: an `<img>`
sends no headers of ours) shows it only to whoever holds the URL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    AttachmentUploadDescriptor,
    FileAttachment,
    ImageAttachment,
)

from ..errors import BadRequest, PayloadTooLarge, RateLimited, UnsupportedMediaType
from .context import TurnContext

if TYPE_CHECKING:
    from .config import AttachmentsConfig

log = logging.getLogger("gateway.agent")
BELOW = "/attachments/"


_RETRY_HELD = "3600"  # uploads never sent are swept within the hour; then there is room


class StoreFull(RateLimited):
    message = "The attachment store is full"


def token(key: bytes, user: str, attachment_id: str) -> str:
    return hmac.digest(key, f"{user}\x00{attachment_id}".encode(), hashlib.sha256)[:16].hex()


def client_tag(context: TurnContext) -> str:
    """Whose bytes, for `max_bytes_per_client`: the client's network as `client_ip` limits
    count it, keyed-hashed so that the store holds no addresses."""
    network = context.info.compiled.client_key(context.client)
    return hmac.digest(context.url_key, network.encode(), hashlib.sha256)[:16].hex()


@dataclasses.dataclass(frozen=True, slots=True)
class Held:
    """What is stored already: the user's attachments, the address's and the store's bytes."""

    count: int = 0
    client_bytes: int = 0
    store_bytes: int = 0


def check_room(config: AttachmentsConfig, held: Held, size: int) -> None:
    """429 when `size` more bytes would pass the address's or the store's cap."""
    if held.client_bytes + size > config.max_bytes_per_client:
        raise RateLimited(
            f"This address stores at most {config.max_bytes_per_client} attachment bytes",
            headers={"Retry-After": _RETRY_HELD},
        )
    if held.store_bytes + size > config.max_store_bytes:
        log.warning("attachment store full (max_store_bytes %d)", config.max_store_bytes)
        raise StoreFull(headers={"Retry-After": _RETRY_HELD})


def new_attachment(
    params: AttachmentCreateParams,
    context: TurnContext,
    held: Held,
    generate_id: Callable[[str, TurnContext], str],
) -> Attachment:
    config = context.attachments
    if config is None:
        raise BadRequest("This route takes no attachments")
    mime = params.mime_type.split(";", 1)[0].strip().lower()
    if mime not in config.mime_types:
        raise UnsupportedMediaType(f"Attachments of type {mime[:100]!r} are not accepted")
    if params.size > config.max_bytes or params.size < 0:
        raise PayloadTooLarge(f"Attachments are at most {config.max_bytes} bytes")
    if held.count >= config.max_per_user:
        raise RateLimited("Too many attachments", headers={"Retry-After": _RETRY_HELD})
    check_room(config, held, params.size)
    attachment_id = generate_id(mime, context)
    signed = token(context.url_key, context.user, attachment_id)
    url = f"{context.upload_base}{BELOW}{attachment_id}?u={context.user}&t={signed}"
    descriptor = AttachmentUploadDescriptor(url=url, method="POST")  # type: ignore[arg-type]
    name = params.name[:255] or "attachment"
    if mime.startswith("image/"):
        return ImageAttachment(
            id=attachment_id, name=name, mime_type=mime, upload_descriptor=descriptor,
            preview_url=url,  # type: ignore[arg-type]
        )  # fmt: skip
    return FileAttachment(id=attachment_id, name=name, mime_type=mime, upload_descriptor=descriptor)
