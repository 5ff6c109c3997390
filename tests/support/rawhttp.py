"""HTTP/1.1 over raw sockets, for requests no well-behaved client library will send:
CR/LF in header values, garbage request lines, trickled heads and bodies, pipelining."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass
class Answer:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_code(self) -> str:
        """The code of a JSON error answer, checking its exact shape on the way."""
        assert self.headers.get("Content-Type", "").startswith("application/json"), self
        data = self.json()
        assert isinstance(data, dict) and set(data) == {"error"}, data
        error = data["error"]
        assert isinstance(error, dict) and set(error) == {"code", "message"}, data
        assert isinstance(error["code"], str) and isinstance(error["message"], str), data
        return error["code"]


def request_bytes(
    method: str,
    path: str,
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes = b"",
    *,
    close: bool = True,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode("utf-8", "surrogateescape"), b"Host: gateway"]
    for name, value in headers:
        raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
        lines.append(name.encode() + b": " + raw)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def read_answer(
    reader: asyncio.StreamReader, *, head_only: bool = False, timeout: float = 10.0
) -> Answer | None:
    """One answer from the stream, or None when it ends before an answer starts."""
    async with asyncio.timeout(timeout):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise AssertionError(f"answer cut short: {exc.partial!r}") from None
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        version, status, *_ = status_line.split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), status_line
        headers: CIMultiDict[str] = CIMultiDict()
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        if head_only or status in ("204", "304") or status.startswith("1"):
            body = b""
        elif "Content-Length" in headers:
            body = await reader.readexactly(int(headers["Content-Length"]))
        elif headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        else:
            body = await reader.read()
        return Answer(int(status), headers, body)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)


async def exchange(
    port: int, data: bytes, *, head_only: bool = False, timeout: float = 10.0
) -> Answer | None:
    """Send raw bytes on a new connection and read one answer (None: closed unanswered)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_answer(reader, head_only=head_only, timeout=timeout)
    finally:
        writer.close()


async def closed_by_peer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (bounded wait)."""
    async with asyncio.timeout(timeout):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""
