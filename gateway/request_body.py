"""Reading a request body within a route's byte budget, and parsing it as a JSON object."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .errors import BadRequest, ClientClosed, PayloadTooLarge


async def read_capped(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing early on Content-Length and again while reading."""
    declared = request.content_length
    if declared is not None:
        if declared > limit:
            raise PayloadTooLarge()
        if declared == 0:
            return b""
        # aiohttp's parser delivers exactly Content-Length bytes: read them in one go.
        try:
            return await request.content.readexactly(declared)
        except asyncio.IncompleteReadError:
            raise ClientClosed() from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def parse_object(raw: bytes, *, empty_ok: bool = True) -> dict[str, Any]:
    """A JSON object; an empty body is `{}` where allowed. Anything else is 400."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise BadRequest("Request body is empty")
    try:
        # UTF-8 only (RFC 8259 §8.1); json.loads on bytes would also sniff UTF-16 and -32.
        value = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest("Request body must be a JSON object")
    return value
