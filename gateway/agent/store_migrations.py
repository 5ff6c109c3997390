"""The thread store's schema versions (the mechanism: gateway/migrations.py).

A step alters what an older version already has (columns, indexes, backfills); a table
new in a version needs no step: `create_all` runs after the steps and adds missing
tables. Adding a version: append to `meta` (store_schema.py), then a step here (an empty
one if only tables were added).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ..migrations import Versions, sync_step
from ..migrations import migrate as migrate_versions
from .store_schema import attachments, feedback, meta, schema


def _add_columns(conn: sa.Connection, table: sa.Table, *names: str) -> None:
    """ALTER TABLE … ADD COLUMN for columns `meta` already declares (types compiled for the
    dialect, so both stores get their own spelling)."""
    for name in names:
        column = table.c[name]
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))


def _create_index(conn: sa.Connection, table: sa.Table, name: str) -> None:
    (index,) = [i for i in table.indexes if i.name == name]
    index.create(conn)


def _v2(conn: sa.Connection) -> None:
    """Attachments learn who stored them and how many bytes (the per-address and store
    caps); the bytes already stored are counted, the address of old rows is unknown."""
    _add_columns(conn, attachments, "client", "size")
    content = attachments.c.content
    conn.execute(
        attachments.update().where(content.is_not(None)).values(size=sa.func.length(content))
    )
    _create_index(conn, attachments, "ckgw_attachments_client")


def _v3(conn: sa.Connection) -> None:
    """The widget's feedback gets its table (nothing older to carry over)."""
    feedback.create(conn, checkfirst=True)


VERSIONS = Versions(
    "the thread store",
    schema,
    meta,
    {2: sync_step(_v2), 3: sync_step(_v3)},
    lock=0x636B_6777,  # "ckgw"
)
SCHEMA_VERSION = VERSIONS.current


def _stored_version(conn: sa.Connection) -> int | None:
    """The version a database has, read without creating anything (the export reads)."""
    if not sa.inspect(conn).has_table(schema.name):
        return None
    return conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()


async def migrate(engine: AsyncEngine) -> None:
    await migrate_versions(engine, VERSIONS)
