"""The knowledge index's interface: one per store, the backend chosen by its URL.

An ingest builds aside (`begin` → `put`/`keep` → `commit`) and switches at the end: a
running gateway searches the last committed index until then, never a half-built one.
Every call names the route: several routes may share one store.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol

from .model import Hit, IndexStats, Page, PageState

Validators = tuple[str | None, str | None]  # a page's ETag and Last-Modified


class IndexUnavailable(Exception):
    """The store did not answer (down, locked past its timeout); the last committed index
    is unchanged and still serves once the store is back."""


class IndexConflict(Exception):
    """Another ingest of the same route committed while this one was building; this build
    is dropped (the other one's index serves)."""


class IndexBuild(Protocol):
    """One ingest of one route, invisible to searches until `commit`."""

    async def put(self, page: Page) -> None:
        """A new or changed page: its passages replace the page's old ones."""

    async def keep(self, url: str, validators: Validators | None = None) -> None:
        """A page left as it is: unchanged (304, or the same text hash), or failed this
        time (its previous passages stay). `validators`, the (ETag, Last-Modified) it came
        with when it answered 200 with the same text (a redeploy): stored, so the next run
        asks with them and gets a 304."""

    async def commit(self) -> int:
        """Switch searches to this build; pages neither put nor kept are removed.
        Returns how many pages were removed."""

    async def abort(self) -> None:
        """Drop the build; searches keep the last committed index."""


class KnowledgeIndex(Protocol):
    async def pages(self, route: str) -> dict[str, PageState]:
        """The committed index's pages, by URL, for conditional requests."""

    async def begin(self, route: str) -> IndexBuild: ...

    async def search(self, route: str, query: str, limit: int) -> list[Hit]:
        """Natural-language search (any text is safe), best first."""

    async def stats(self, route: str) -> IndexStats: ...

    def refresh_lock(self, route: str) -> AbstractAsyncContextManager[bool]:
        """Held by one process at a time across replicas (PostgreSQL: an advisory lock;
        SQLite: one replica by definition); yields False at once when another holds it."""
