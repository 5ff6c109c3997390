"""What `ChatKitServer.process` returns, sent with aiohttp: a JSON body, or the Server-Sent
Events of a streaming request, each written the moment the server yields it."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from chatkit.server import NonStreamingResult, StreamingResult

EVENT_STREAM = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


async def event_stream(
    request: web.Request, headers: Mapping[str, str] = EVENT_STREAM
) -> web.StreamResponse:
    """A started (headers sent) stream response; the caller writes the events."""
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    return response


async def chatkit_response(
    request: web.Request,
    result: StreamingResult | NonStreamingResult,
    headers: Mapping[str, str] | None = None,
    *,
    stream_headers: Mapping[str, str] = EVENT_STREAM,
) -> web.StreamResponse:
    """`headers` go on either answer; `stream_headers` on a stream only."""
    if not isinstance(result, StreamingResult):
        return web.Response(body=result.json, content_type="application/json", headers=headers)
    response = await event_stream(request, {**(headers or {}), **stream_headers})
    async for chunk in result:
        await response.write(chunk)
    await response.write_eof()
    return response
