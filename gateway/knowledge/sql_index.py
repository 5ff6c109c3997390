"""The knowledge index in the route's store (SQLite FTS5 or PostgreSQL full text).

`open_index(engine)` migrates the knowledge tables and returns the engine's backend: what
both share is in index_sql.py, what differs in index_sqlite.py and index_postgres.py.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from ..migrations import migrate
from .index import KnowledgeIndex
from .index_schema import VERSIONS


async def open_index(engine: AsyncEngine) -> KnowledgeIndex:
    """The index in the store `engine` opens (the route's thread store), migrated."""
    await migrate(engine, VERSIONS)
    if engine.dialect.name == "postgresql":
        from .index_postgres import PostgresIndex

        return PostgresIndex(engine, engine.execution_options(isolation_level="AUTOCOMMIT"))
    from .index_sqlite import SqliteIndex

    return SqliteIndex(engine, engine)
