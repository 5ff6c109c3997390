"""What the knowledge index's two backends share (sql_index.py picks one by the store):
builds aside and the switch at commit (index_schema.py says how), page state, stats. What
differs (passage rows, the search, the refresh lock) is in index_sqlite.py and
index_postgres.py.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .index import IndexBuild, IndexConflict, IndexUnavailable, Validators
from .index_query import terms
from .index_schema import pages, routes
from .model import Hit, IndexStats, Page, PageState

log = logging.getLogger("gateway.knowledge.index")
_DOWN = (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError)
_KEEP_BATCH = 500
MAX_LIMIT = 50


@contextmanager
def unavailable_on_error(what: str) -> Iterator[None]:
    """A store that does not answer is IndexUnavailable (its message names no URL)."""
    try:
        yield
    except _DOWN as exc:
        raise IndexUnavailable(f"knowledge store unavailable during {what}") from exc


def clean(text: str) -> str:
    """Text any store takes: PostgreSQL refuses NUL, neither driver encodes lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _visible(route: str) -> sa.ColumnElement[bool]:
    committed = sa.select(routes.c.committed).where(routes.c.route == route).scalar_subquery()
    return sa.and_(pages.c.route == route, pages.c.born <= committed)


class SqlIndex(ABC):
    """One store's knowledge index; the dialect's subclass says how passages are searched."""

    __slots__ = ("engine", "reads")
    # One passage row from :page_id, :number (its place in the page), :title, :heading,
    # :body and :url; a page's passages past `max_passages` are left out.
    insert_passage: ClassVar[sa.TextClause]
    max_passages: ClassVar[int | None] = None

    def __init__(self, engine: AsyncEngine, reads: AsyncEngine) -> None:
        self.engine = engine
        self.reads = reads  # the same pool, for statements that need no transaction

    async def insert_passages(self, conn: AsyncConnection, page_id: int, page: Page) -> None:
        """The page's passages, searchable once its build is committed."""
        title = clean(page.title)
        rows = [
            {
                "page_id": page_id,
                "number": number,
                "title": title,
                "heading": clean(passage.heading),
                "body": clean(passage.text),
                "url": clean(passage.url),
            }
            for number, passage in enumerate(page.passages[: self.max_passages])
        ]
        if rows:
            await conn.execute(self.insert_passage, rows)

    @abstractmethod
    async def find(
        self, conn: AsyncConnection, route: str, words: list[str], limit: int
    ) -> list[Hit]:
        """The best passages for the terms, in one statement (one snapshot)."""

    @abstractmethod
    def refresh_lock(self, route: str) -> AbstractAsyncContextManager[bool]: ...

    @abstractmethod
    async def update_stats(self, conn: AsyncConnection, route: str, build: int) -> None:
        """The route's term statistics for its build `build`, in the transaction that
        commits it, when the store does not keep them itself."""

    async def pages(self, route: str) -> dict[str, PageState]:
        query = sa.select(
            pages.c.url, pages.c.text_hash, pages.c.etag, pages.c.last_modified
        ).where(_visible(route))
        with unavailable_on_error("reading pages"):
            async with self.reads.connect() as conn:
                rows = (await conn.execute(query)).all()
        return {
            row.url: PageState(row.url, row.text_hash, row.etag, row.last_modified) for row in rows
        }

    async def search(self, route: str, query: str, limit: int) -> list[Hit]:
        words = terms(query)
        if not words:
            return []
        with unavailable_on_error("a search"):
            async with self.reads.connect() as conn:
                return await self.find(conn, route, words, max(1, min(limit, MAX_LIMIT)))

    async def stats(self, route: str) -> IndexStats:
        count = sa.select(sa.func.count()).select_from(pages).where(_visible(route))
        last = sa.select(routes.c.last_ingest).where(routes.c.route == route)
        with unavailable_on_error("reading stats"):
            async with self.reads.connect() as conn:
                found = (await conn.execute(count)).scalar_one()
                ingest = (await conn.execute(last)).scalar()
        return IndexStats(pages=int(found), last_ingest=ingest)

    async def begin(self, route: str) -> IndexBuild:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        create = (
            dialect.insert(routes)
            .values(route=route, committed=0, next_build=1)
            .on_conflict_do_nothing(index_elements=[routes.c.route])
        )
        take = (
            routes.update()
            .where(routes.c.route == route)
            .values(next_build=routes.c.next_build + 1)
            .returning(routes.c.next_build, routes.c.committed)
        )
        with unavailable_on_error("the start of an ingest"):
            async with self.engine.begin() as conn:
                await conn.execute(create)
                row = (await conn.execute(take)).one()
        return SqlBuild(self, route, build=row.next_build - 1, base=row.committed)


class SqlBuild:
    """One ingest of one route: rows born `build`, invisible until commit."""

    __slots__ = (
        "_base", "_build", "_changed", "_done", "_index", "_keeps", "_revalidated", "_route",
    )  # fmt: skip

    def __init__(self, index: SqlIndex, route: str, *, build: int, base: int) -> None:
        self._index = index
        self._route = route
        self._build = build
        self._base = base  # the committed build this one replaces
        self._keeps: list[str] = []
        self._revalidated: list[dict[str, str | None]] = []  # kept, with new validators
        self._done = False
        self._changed = False  # a page put: the term statistics are recounted at commit

    def _open(self) -> None:
        if self._done:
            raise RuntimeError("this build was committed or aborted")

    async def put(self, page: Page) -> None:
        self._open()
        url = clean(page.url)
        row = {
            "route": self._route,
            "url": url,
            "title": clean(page.title),
            "text_hash": clean(page.text_hash),
            "etag": _maybe(page.etag),
            "last_modified": _maybe(page.last_modified),
            "born": self._build,
        }
        again = pages.delete().where(
            pages.c.route == self._route, pages.c.url == url, pages.c.born == self._build
        )
        self._changed = True
        with unavailable_on_error("an ingest"):
            async with self._index.engine.begin() as conn:
                await conn.execute(again)  # the same URL twice in one build: the last wins
                page_id = (
                    await conn.execute(pages.insert().values(row).returning(pages.c.id))
                ).scalar_one()
                await self._index.insert_passages(conn, int(page_id), page)

    async def keep(self, url: str, validators: Validators | None = None) -> None:
        self._open()
        if validators is None:
            self._keeps.append(clean(url))
        else:
            etag, modified = validators
            self._revalidated.append({"u": clean(url), "e": _maybe(etag), "m": _maybe(modified)})
        if len(self._keeps) + len(self._revalidated) >= _KEEP_BATCH:
            with unavailable_on_error("an ingest"):
                async with self._index.engine.begin() as conn:
                    await self._flush(conn)

    async def _flush(self, conn: AsyncConnection) -> None:
        mark = pages.update().where(
            pages.c.route == self._route,
            pages.c.url == sa.bindparam("u"),
            pages.c.born <= self._base,
        )
        if self._keeps:
            await conn.execute(mark.values(kept=self._build), [{"u": u} for u in self._keeps])
            self._keeps.clear()
        if self._revalidated:
            fresh = mark.values(
                kept=self._build, etag=sa.bindparam("e"), last_modified=sa.bindparam("m")
            )
            await conn.execute(fresh, self._revalidated)
            self._revalidated.clear()

    async def commit(self) -> int:
        self._open()
        new = pages.alias("new")
        replaced = sa.exists().where(
            new.c.route == self._route, new.c.url == pages.c.url, new.c.born == self._build
        )
        kept = sa.func.coalesce(pages.c.kept, 0) == self._build
        old = sa.and_(pages.c.route == self._route, pages.c.born <= self._base)
        gone = sa.select(sa.func.count()).select_from(pages).where(old, ~kept, ~replaced)
        switch = (
            routes.update()
            .where(routes.c.route == self._route, routes.c.committed == self._base)
            .values(committed=self._build, last_ingest=time.time())
        )
        drop = pages.delete().where(
            pages.c.route == self._route,
            pages.c.born != self._build,
            ~sa.and_(pages.c.born <= self._base, kept, ~replaced),
        )
        with unavailable_on_error("the commit of an ingest"):
            async with self._index.engine.begin() as conn:
                switched = (await conn.execute(switch)).rowcount == 1
                if switched:
                    await self._flush(conn)
                    removed = (await conn.execute(gone)).scalar_one()
                    await conn.execute(drop)  # old versions, removed pages, dead builds' rows
                    if self._changed or removed:
                        await self._index.update_stats(conn, self._route, self._build)
        if not switched:
            await self.abort()
            raise IndexConflict(f"another ingest of route {self._route!r} committed first")
        self._done = True
        return int(removed)

    async def abort(self) -> None:
        """Never raises: rows left by a failed abort are invisible, and the next commit of
        the route deletes them."""
        if self._done:
            return
        self._done = True
        drop = pages.delete().where(pages.c.route == self._route, pages.c.born == self._build)
        try:
            async with self._index.engine.begin() as conn:
                await conn.execute(drop)
        except _DOWN as exc:
            log.warning(
                "knowledge build of route %r not cleaned up: %s", self._route, type(exc).__name__
            )


def _maybe(text: str | None) -> str | None:
    return None if text is None else clean(text)
