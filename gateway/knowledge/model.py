"""What the knowledge index holds and returns: plain values, shared by ingest and search."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Passage:
    """A part of a page under one heading, small enough to hand the model whole."""

    heading: str  # the heading path, e.g. "Installation > From source" ("" before any)
    url: str  # the page URL, with `#anchor` when the section's heading has an id
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class PageState:
    """What the index remembers of a page, for the next ingest's conditional request."""

    url: str
    text_hash: str  # of the extracted title and text: unchanged text is not re-indexed
    etag: str | None = None
    last_modified: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    url: str  # canonical: no fragment; what citations link to (passages may add #anchor)
    title: str
    text_hash: str
    passages: tuple[Passage, ...]
    etag: str | None = None
    last_modified: str | None = None

    @property
    def state(self) -> PageState:
        return PageState(self.url, self.text_hash, self.etag, self.last_modified)


@dataclasses.dataclass(frozen=True, slots=True)
class Hit:
    """One passage found by a search, best first."""

    title: str  # the page's title
    url: str  # the passage's URL (page#anchor when it has one)
    heading: str
    text: str
    score: float


@dataclasses.dataclass(frozen=True, slots=True)
class IndexStats:
    pages: int
    last_ingest: float | None  # unix seconds of the last committed ingest, None: never
