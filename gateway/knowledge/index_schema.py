"""The knowledge index's tables and their migrations, apart from the thread tables'.

Its own version row (`ckgw_knowledge_schema`): the index and the threads migrate on their
own. A database written by a newer gateway stops the start with a clear error.

Every page row carries its route (routes may share a store) and `born`, the build that
wrote it; a route's searches see the rows born at or before its `committed` build. A build
writes its rows with a new number, invisible until its commit moves `committed` to it and
deletes what the new index no longer holds, in one transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..migrations import Versions

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # sqlite: the rowid

meta = sa.MetaData()
schema = sa.Table(
    "ckgw_knowledge_schema",
    meta,
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("applied_at", sa.DateTime(), nullable=False),
)
routes = sa.Table(
    "ckgw_knowledge_routes",
    meta,
    sa.Column("route", sa.String(128), primary_key=True),
    sa.Column("committed", sa.BigInteger(), nullable=False),  # the build searches see
    sa.Column("next_build", sa.BigInteger(), nullable=False),
    sa.Column("last_ingest", sa.Float(), nullable=True),  # unix seconds of that commit
    sa.Column("passages", sa.BigInteger(), nullable=True),  # in that build (PostgreSQL; v2)
)
pages = sa.Table(
    "ckgw_knowledge_pages",
    meta,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("route", sa.String(128), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("text_hash", sa.String(128), nullable=False),
    sa.Column("etag", sa.Text(), nullable=True),
    sa.Column("last_modified", sa.Text(), nullable=True),
    sa.Column("born", sa.BigInteger(), nullable=False),  # the build that wrote it
    sa.Column("kept", sa.BigInteger(), nullable=True),  # the last build that kept it
    sa.Index("ckgw_knowledge_pages_url", "route", "url", "born"),
    sa.Index("ckgw_knowledge_pages_born", "route", "born"),
)

# SQLite: the passages are the FTS5 table's rows; rowid = page id << 16 | passage number,
# so a page's passages are one rowid range (FTS5 finds ranges without a scan) and a deleted
# page takes them along (trigger). 65,536 passages per page at most.
PASSAGE_BITS = 16
MAX_PASSAGES = 1 << PASSAGE_BITS
_SQLITE_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS ckgw_knowledge_fts USING fts5("
    "title, heading, body, url UNINDEXED, "
    "tokenize = 'porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER IF NOT EXISTS ckgw_knowledge_pages_gone "
    "AFTER DELETE ON ckgw_knowledge_pages BEGIN DELETE FROM ckgw_knowledge_fts "
    "WHERE rowid BETWEEN old.id * 65536 AND old.id * 65536 + 65535; END",  # MAX_PASSAGES
)
# PostgreSQL: a passages table with its tsvector (title A, heading B, text C) and GIN index.
_POSTGRES_DDL = (
    "CREATE TABLE IF NOT EXISTS ckgw_knowledge_passages ("
    " id BIGSERIAL PRIMARY KEY,"
    " page_id BIGINT NOT NULL REFERENCES ckgw_knowledge_pages (id) ON DELETE CASCADE,"
    " heading TEXT NOT NULL, url TEXT NOT NULL, body TEXT NOT NULL,"
    " tsv TSVECTOR NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ckgw_knowledge_passages_page ON ckgw_knowledge_passages (page_id)",
    "CREATE INDEX IF NOT EXISTS ckgw_knowledge_passages_tsv "
    "ON ckgw_knowledge_passages USING GIN (tsv)",
    # v2: in how many of the route's committed passages each lexeme is (ts_stat's ndoc)
    "CREATE TABLE IF NOT EXISTS ckgw_knowledge_terms ("
    " route VARCHAR(128) NOT NULL, lexeme TEXT NOT NULL, docs BIGINT NOT NULL,"
    " PRIMARY KEY (route, lexeme))",
)
# The route's statistics over the passages of its build `:build` (in the transaction that
# commits it): ts_stat reads them through a query of its own, the route quoted by format.
_POSTGRES_STATS = (
    "DELETE FROM ckgw_knowledge_terms WHERE route = :route",
    "INSERT INTO ckgw_knowledge_terms (route, lexeme, docs) "
    "SELECT :route, word, ndoc FROM ts_stat(format("
    "'SELECT s.tsv FROM ckgw_knowledge_passages AS s JOIN ckgw_knowledge_pages AS p "
    "ON p.id = s.page_id WHERE p.route = %L AND p.born <= %s', "
    "CAST(:route AS TEXT), CAST(:build AS BIGINT)))",
    "UPDATE ckgw_knowledge_routes SET passages = (SELECT count(*) "
    "FROM ckgw_knowledge_passages AS s JOIN ckgw_knowledge_pages AS p ON p.id = s.page_id "
    "WHERE p.route = :route AND p.born <= :build) WHERE route = :route",
    # The planner's statistics now, not at autovacuum's next round (docs/DESIGN.md).
    "ANALYZE ckgw_knowledge_pages, ckgw_knowledge_passages",
)


async def postgres_stats(conn: AsyncConnection, route: str, build: int) -> None:
    """Recount the route's term statistics (PostgreSQL) for its build `build`."""
    for statement in _POSTGRES_STATS:
        await conn.execute(sa.text(statement), {"route": route, "build": build})


async def _create(conn: AsyncConnection) -> None:
    postgres = conn.dialect.name == "postgresql"
    for ddl in _POSTGRES_DDL if postgres else _SQLITE_DDL:
        await conn.execute(sa.text(ddl))


async def _v2(conn: AsyncConnection) -> None:
    """Routes learn their passage count, PostgreSQL its term statistics: computed here for
    each committed route (SQLite's FTS5 keeps its own)."""
    await conn.execute(sa.text("ALTER TABLE ckgw_knowledge_routes ADD COLUMN passages BIGINT"))
    if conn.dialect.name == "postgresql":
        await _create(conn)
        found = await conn.execute(sa.select(routes.c.route, routes.c.committed))
        for route, build in found.all():
            await postgres_stats(conn, route, build)


VERSIONS = Versions(
    "the knowledge index",
    schema,
    meta,
    {2: _v2},
    lock=0x636B67776B6E6F77,  # "ckgwknow": concurrent starts (replicas, an ingest) take turns
    create=_create,
)
SCHEMA_VERSION = VERSIONS.current
