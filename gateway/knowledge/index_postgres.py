"""PostgreSQL: passages with a weighted tsvector (title A, heading B, text C; English
stemming) under a GIN index, ranked BM25-like: the sum of each term's `ts_rank` times its
rarity (inverse document frequency, from the route's term statistics kept at commit), over
a bounded set of candidates (the rarest terms' passages: index_query.py, rarity). One
refresher per route across replicas through an advisory lock."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .index_query import candidates, idf, websearch_query
from .index_schema import postgres_stats
from .index_sql import SqlIndex, unavailable_on_error
from .model import Hit

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
# Each term's passage count in the route's committed index (the least of its lexemes': a
# term such as pg_dump is a phrase of two); NULL for a term with no lexeme (a stop word of
# PostgreSQL's own list). `passages`: NULL before the route's first commit.
_DOCS = sa.text(
    "SELECT r.passages AS total, w.term, (SELECT min(coalesce((SELECT t.docs"
    " FROM ckgw_knowledge_terms AS t WHERE t.route = :route AND t.lexeme = l.lexeme), 0))"
    " FROM unnest(tsvector_to_array(to_tsvector('english', w.term))) AS l (lexeme)) AS docs "
    "FROM unnest(CAST(:terms AS TEXT[])) WITH ORDINALITY AS w (term, n) "
    "LEFT JOIN ckgw_knowledge_routes AS r ON r.route = :route ORDER BY w.n"
)
# Candidates from the GIN index (index_query.py: rarity), each ranked by the sum over all the
# question's terms of ts_rank * idf, the text read for the best few only. The ts_rank weights
# (D, C, B, A) are SQLite's BM25 column weights (docs/DESIGN.md); normalization 1: a long
# passage does not win by length alone. The match through a sub-select: the planner then
# takes the GIN index, not the whole table (a constant tsquery's estimate is a tenth).
_SEARCH = sa.text(
    "WITH w AS MATERIALIZED ("
    " SELECT websearch_to_tsquery('english', w.term) AS q, w.weight"
    " FROM unnest(CAST(:terms AS TEXT[]), CAST(:weights AS FLOAT8[])) AS w (term, weight)), "
    "best AS ("
    " SELECT s.id, (SELECT sum(ts_rank('{0.1, 0.52, 0.88, 1.0}', s.tsv, w.q, 1) * w.weight)"
    " FROM w) AS rank"
    " FROM ckgw_knowledge_passages AS s JOIN ckgw_knowledge_pages AS p ON p.id = s.page_id"
    " WHERE s.tsv @@ (SELECT websearch_to_tsquery('english', :match)) AND p.route = :route"
    " AND p.born <= (SELECT committed FROM ckgw_knowledge_routes WHERE route = :route)"
    " ORDER BY rank DESC LIMIT :limit) "
    "SELECT p.title, s.url, s.heading, s.body, best.rank FROM best "
    "JOIN ckgw_knowledge_passages AS s ON s.id = best.id "
    "JOIN ckgw_knowledge_pages AS p ON p.id = s.page_id "
    "ORDER BY best.rank DESC"
)


def lock_key(route: str) -> int:
    """The route's advisory lock: a signed 64-bit key from its name."""
    digest = hashlib.blake2b(f"chatkit-gateway knowledge {route}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class PostgresIndex(SqlIndex):
    __slots__ = ()
    insert_passage = _INSERT

    async def find(
        self, conn: AsyncConnection, route: str, words: list[str], limit: int
    ) -> list[Hit]:
        found = (await conn.execute(_DOCS, {"route": route, "terms": words})).all()
        total = int(found[0].total or 0)
        docs = {row.term: int(row.docs) for row in found if row.docs is not None}
        if not docs:
            return []
        only = candidates(docs)
        match = list(docs) if only is None else only.words
        params = {
            "terms": list(docs),
            "weights": [idf(count, total) for count in docs.values()],
            "match": websearch_query(match, every=only is not None and only.every),
            "route": route,
            "limit": limit,
        }
        rows = (await conn.execute(_SEARCH, params)).all()
        if only is not None and len(rows) < limit:  # too few: any term's passages
            params["match"] = websearch_query(list(docs))
            rows = (await conn.execute(_SEARCH, params)).all()
        return [Hit(row.title, row.url, row.heading, row.body, float(row.rank)) for row in rows]

    async def update_stats(self, conn: AsyncConnection, route: str, build: int) -> None:
        await postgres_stats(conn, route, build)

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
