"""A page's blocks cut into passages along its headings (SPEC §9), each with its heading
path and `page#anchor`: under MAX_CHARS, a section under MIN_CHARS joined by the next ones,
no overlap (why each: docs/DESIGN.md, Passages).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

from .extract import Block, Extracted
from .model import Page, Passage

MAX_CHARS = 1200
MIN_CHARS = 300
_SENTENCE = re.compile(r"(?<=[.!?:;])\s+")


def _pieces(text: str) -> Iterator[str]:
    """The paragraph in parts of at most MAX_CHARS, cut at sentence ends where it can."""
    if len(text) <= MAX_CHARS:
        yield text
        return
    part = ""
    for sentence in _SENTENCE.split(text):
        while len(sentence) > MAX_CHARS:  # one endless sentence: cut at a space
            cut = sentence.rfind(" ", 0, MAX_CHARS)
            cut = cut if cut > MAX_CHARS // 2 else MAX_CHARS
            if part:
                yield part
                part = ""
            yield sentence[:cut].rstrip()
            sentence = sentence[cut:].lstrip()
        if part and len(part) + 1 + len(sentence) > MAX_CHARS:
            yield part
            part = ""
        part = f"{part} {sentence}" if part else sentence
    if part:
        yield part


class _Packer:
    __slots__ = ("anchor", "heading", "out", "parts", "size", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.out: list[Passage] = []
        self.parts: list[str] = []
        self.size = 0
        self.heading = ""
        self.anchor: str | None = None

    def close(self) -> None:
        text = "\n".join(self.parts).strip()
        if text:
            url = f"{self.url}#{self.anchor}" if self.anchor else self.url
            self.out.append(Passage(self.heading, url, text))
        self.parts, self.size = [], 0

    def section(self, heading: str, anchor: str | None, line: str) -> None:
        """A new section starts its own passage, unless the open one is still tiny: then
        the section joins it, its heading as a line."""
        if self.parts and self.size < MIN_CHARS:
            self.add(line)
            return
        self.close()
        self.heading, self.anchor = heading, anchor

    def add(self, text: str) -> None:
        if self.parts and self.size + 1 + len(text) > MAX_CHARS:
            self.close()
        self.parts.append(text)
        self.size += len(text) + (1 if self.size else 0)


def passages(url: str, blocks: Iterable[Block]) -> tuple[Passage, ...]:
    packer = _Packer(url)
    stack: list[tuple[int, str, str | None]] = []  # (level, text, anchor) of open headings
    for block in blocks:
        if block.level:
            while stack and stack[-1][0] >= block.level:
                stack.pop()
            stack.append((block.level, block.text, block.anchor))
            anchor = next((a for _, _, a in reversed(stack) if a), None)
            packer.section(" > ".join(t for _, t, _ in stack), anchor, block.text)
            continue
        for piece in _pieces(block.text):
            packer.add(piece)
    packer.close()
    return tuple(packer.out)


def text_hash(title: str, items: Iterable[Passage]) -> str:
    digest = hashlib.sha256(title.encode())
    for p in items:
        for field in (p.heading, p.url, p.text):
            digest.update(b"\x00")
            digest.update(field.encode())
    return digest.hexdigest()


def page(
    url: str, extracted: Extracted, etag: str | None = None, last_modified: str | None = None
) -> Page:
    items = passages(url, extracted.blocks)
    return Page(url, extracted.title, text_hash(extracted.title, items), items, etag, last_modified)
