"""SQLite: passages in an FTS5 table (Porter stemming), ranked by BM25 with the page title
and the heading weighing more than the text, over a bounded set of candidates (the rarest
terms' passages: index_query.py, rarity)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .index_query import MAX_TERMS, candidates, fts5_phrase, fts5_query
from .index_schema import MAX_PASSAGES
from .index_sql import SqlIndex
from .model import Hit

# bm25() weights per column: title, heading, body (url is not indexed). Lower is better.
_INSERT = sa.text(
    "INSERT INTO ckgw_knowledge_fts (rowid, title, heading, body, url) "
    "VALUES ((:page_id << 16) | :number, :title, :heading, :body, :url)"  # PASSAGE_BITS
)
# Ranked on rowids alone, the text read for the best few only: a question's terms match a
# third of the manual's passages, and sorting them with their text cost a quarter more.
_RANKED = (
    "SELECT f.title, f.url, f.heading, f.body, best.rank FROM ("
    " SELECT f.rowid AS id, bm25(ckgw_knowledge_fts, 8.0, 4.0, 1.0) AS rank"
    " FROM ckgw_knowledge_fts AS f"
    " JOIN ckgw_knowledge_pages AS p ON p.id = (f.rowid >> 16)"  # PASSAGE_BITS
    " WHERE ckgw_knowledge_fts MATCH :q AND p.route = :route AND p.born <="
    " (SELECT committed FROM ckgw_knowledge_routes WHERE route = :route){among}"
    " ORDER BY rank LIMIT :limit"
    ") AS best JOIN ckgw_knowledge_fts AS f ON f.rowid = best.id ORDER BY best.rank"
)
_SEARCH = sa.text(_RANKED.format(among=""))
# Only the rarest terms' passages (:among) ranked, by BM25 over all the terms (:q): the
# unary + keeps the planner from driving the search by the rowid list (each rowid was a
# full-text query of its own: 200 ms, not 2).
_SEARCH_AMONG = sa.text(
    _RANKED.format(
        among=" AND +f.rowid IN"
        " (SELECT rowid FROM ckgw_knowledge_fts WHERE ckgw_knowledge_fts MATCH :among)"
    )
)


_FTS = sa.table("ckgw_knowledge_fts", sa.column("ckgw_knowledge_fts"))


def _counts(terms: int) -> sa.Select[Any]:
    """Each term's (`:t0`…) passage count: FTS5 walks the term's doclist, no ranking (~0.1
    ms for a rare term, ~0.3 ms for one in a third of 8,000 passages). The file's counts,
    all routes together, as FTS5's own bm25() takes them."""
    match = _FTS.c.ckgw_knowledge_fts.op("MATCH")
    return sa.select(
        *(
            sa.select(sa.func.count())
            .select_from(_FTS)
            .where(match(sa.bindparam(f"t{n}")))
            .scalar_subquery()
            for n in range(terms)
        )
    )


_COUNTS = tuple(_counts(terms) for terms in range(MAX_TERMS + 1))  # built once


class SqliteIndex(SqlIndex):
    __slots__ = ()
    insert_passage = _INSERT
    max_passages = MAX_PASSAGES

    async def find(
        self, conn: AsyncConnection, route: str, words: list[str], limit: int
    ) -> list[Hit]:
        counts = {f"t{n}": fts5_phrase(word) for n, word in enumerate(words)}
        docs = (await conn.execute(_COUNTS[len(words)], counts)).one()
        only = candidates(dict(zip(words, docs, strict=True)))
        params = {"q": fts5_query(words), "route": route, "limit": limit}
        if only is None:
            rows = (await conn.execute(_SEARCH, params)).all()
        elif only.every:  # all terms common: the passages with every one
            every = {**params, "q": fts5_query(only.words, every=True)}
            rows = (await conn.execute(_SEARCH, every)).all()
        else:
            among = {**params, "among": fts5_query(only.words)}
            rows = (await conn.execute(_SEARCH_AMONG, among)).all()
        if only is not None and len(rows) < limit:  # too few: any term's passages
            rows = (await conn.execute(_SEARCH, params)).all()
        return [Hit(row.title, row.url, row.heading, row.body, -float(row.rank)) for row in rows]

    async def update_stats(self, conn: AsyncConnection, route: str, build: int) -> None:
        """FTS5 keeps its own (index_query.py: rarity)."""

    @asynccontextmanager
    async def refresh_lock(self, route: str) -> AsyncIterator[bool]:
        """SQLite is one replica by definition."""
        yield True
