"""PostgreSQL: passages with a weighted tsvector (title A, heading B, text C; English
stemming) under a GIN index, ranked by `ts_rank`; one refresher per route across
replicas through an advisory lock."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .index_query import websearch_query
from .model import Hit, Page
from .sql_index import SqlIndex, clean, unavailable_on_error

log = logging.getLogger("gateway.knowledge.index")

# to_tsvector refuses more than 1 MiB of lexemes: a passage's text is indexed up to here
# (200,000 characters; passages are a few kB, this bounds a page the splitter could not cut).
_INSERT = sa.text(
    "INSERT INTO ckgw_knowledge_passages (page_id, heading, url, body, tsv) VALUES "
    "(:page_id, :heading, :url, :body, "
    " setweight(to_tsvector('english', :title), 'A') || "
    " setweight(to_tsvector('english', :heading), 'B') || "
    " setweight(to_tsvector('english', left(:body, 200000)), 'C'))"
)
# ts_rank, not ts_rank_cd: half the time on the PostgreSQL manual, the same hit@8 (measured,
# bench/knowledge_search.py); normalization 1: a long passage does not win by length alone.
_SEARCH = sa.text(
    "SELECT p.title, s.url, s.heading, s.body, ts_rank(s.tsv, q.q, 1) AS rank "
    "FROM websearch_to_tsquery('english', :q) AS q (q) "
    "JOIN ckgw_knowledge_passages AS s ON s.tsv @@ q.q "
    "JOIN ckgw_knowledge_pages AS p ON p.id = s.page_id "
    "WHERE p.route = :route AND p.born <= "
    "(SELECT committed FROM ckgw_knowledge_routes WHERE route = :route) "
    "ORDER BY rank DESC LIMIT :limit"
)


def lock_key(route: str) -> int:
    """The route's advisory lock: a signed 64-bit key from its name."""
    digest = hashlib.blake2b(f"chatkit-gateway knowledge {route}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class PostgresIndex(SqlIndex):
    __slots__ = ()

    async def insert_passages(self, conn: AsyncConnection, page_id: int, page: Page) -> None:
        if not page.passages:
            return
        title = clean(page.title)
        rows = [
            {
                "page_id": page_id,
                "title": title,
                "heading": clean(passage.heading),
                "body": clean(passage.text),
                "url": clean(passage.url),
            }
            for passage in page.passages
        ]
        await conn.execute(_INSERT, rows)

    async def find(
        self, conn: AsyncConnection, route: str, words: list[str], limit: int
    ) -> list[Hit]:
        params = {"q": websearch_query(words), "route": route, "limit": limit}
        rows = (await conn.execute(_SEARCH, params)).all()
        return [Hit(row.title, row.url, row.heading, row.body, float(row.rank)) for row in rows]

    @asynccontextmanager
    async def refresh_lock(self, route: str) -> AsyncIterator[bool]:
        """A session advisory lock on one connection, held for the body and released after
        it, even when it fails; a connection lost meanwhile releases it on the server."""
        key = {"k": lock_key(route)}
        with unavailable_on_error("taking the refresh lock"):
            conn = await self.reads.connect()
        try:
            with unavailable_on_error("taking the refresh lock"):
                taken = await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), key)
                held = bool(taken.scalar())
            try:
                yield held
            finally:
                if held:
                    await _unlock(conn, key)
        finally:
            await conn.close()


async def _unlock(conn: AsyncConnection, key: dict[str, int]) -> None:
    try:
        await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), key)
    except Exception as exc:  # the server drops the lock with the connection
        log.warning("knowledge refresh lock not released: %s", type(exc).__name__)
        await conn.invalidate()
