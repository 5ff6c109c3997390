"""An image attachment's preview: the GET of its signed URL, as an `<img>` makes it.

Streamed from the store in pieces (`CHUNK` bytes a query), each write under the route's
`stream_write_timeout_seconds`, so a reader that stops reading holds one piece, not the
image, and is dropped at the deadline. The URL names one immutable upload, so the browser
may keep the answer for a year (`private`: never a shared cache) and revalidate with its
ETag for free.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from chatkit.store import NotFoundError

from ..errors import NotFound
from .attachment_store import SqlAttachmentStore
from .context import TurnContext

CHUNK = 256 * 1024
# Previews one client may have open at once: a thread's images load together, each holds
# one CHUNK at most; the rest get 429 (concurrency.py) and the browser's image retries later.
PER_CLIENT = 8
_CACHE = "private, max-age=31536000, immutable"


async def serve_preview(
    request: web.Request,
    store: SqlAttachmentStore,
    context: TurnContext,
    attachment_id: str,
    write_timeout: float,
) -> web.StreamResponse:
    try:
        attachment, size = await store.load_attachment_size(attachment_id, context)
    except NotFoundError:
        raise NotFound() from None
    if size is None or not attachment.mime_type.startswith("image/"):
        raise NotFound()
    etag = f'"{attachment_id}"'
    # Set where the prepare hook reads them: the route's answers are no-store otherwise.
    kept = context.info.response_headers
    kept.pop("Pragma", None)
    kept["Cache-Control"] = _CACHE
    headers = {"ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    response = web.StreamResponse(headers={**headers, "Content-Type": attachment.mime_type})
    response.content_length = size
    await response.prepare(request)
    offset = 0
    while offset < size:
        piece = await store.read_attachment_chunk(attachment_id, context, offset, CHUNK)
        if not piece:  # deleted meanwhile: the body ends short, the browser sees a failure
            _drop(request)
            return response
        offset += len(piece)
        try:
            async with asyncio.timeout(write_timeout):
                await response.write(piece)  # waits only when the socket is full
        except ConnectionError:
            context.info.error_code = "client_gone"
            return response
        except TimeoutError:
            context.info.error_code = "client_write_timeout"
            _drop(request)
            return response
    await response.write_eof()
    return response


def _drop(request: web.Request) -> None:
    """End the answer without its last bytes, and free the connection now."""
    if request.transport is not None:
        request.transport.close()
