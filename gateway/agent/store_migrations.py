"""The thread store's schema versions: a new database gets the tables of this version; an
older one is brought up step by step, each step in the same transaction as its version row.

A step alters what an older version already has (columns, indexes, backfills); a table
new in a version needs no step: `create_all` runs after the steps and adds missing
tables. Adding a version: append to `meta` (store_schema.py), then a step here if an
existing table changed. Replicas migrating at once on PostgreSQL take turns (an advisory
lock held for the transaction); a database written by a newer gateway is refused.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .store_schema import _now, attachments, feedback, meta, schema

_LOCK = 0x636B_6777  # "ckgw": pg_advisory_xact_lock's key for migrations


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


# Version → the step from the version before it.
STEPS: dict[int, Callable[[sa.Connection], None]] = {2: _v2, 3: _v3}
SCHEMA_VERSION = max(STEPS)


def _stored_version(conn: sa.Connection) -> int | None:
    if not sa.inspect(conn).has_table(schema.name):
        return None
    return conn.execute(sa.select(sa.func.max(schema.c.version))).scalar()


async def migrate(engine: AsyncEngine) -> None:
    """Create the tables, bring an older database up to date, or refuse a newer one."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK)))
        found = await conn.run_sync(_stored_version)
        if found is not None and found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the thread store has schema version {found}; this gateway knows "
                f"{SCHEMA_VERSION}: run the newer gateway, or another database"
            )
        if found is None:
            await conn.run_sync(meta.create_all)
            await conn.execute(schema.insert().values(version=SCHEMA_VERSION, applied_at=_now()))
            return
        for version in range(found + 1, SCHEMA_VERSION + 1):
            await conn.run_sync(STEPS[version])
            await conn.execute(schema.insert().values(version=version, applied_at=_now()))
        await conn.run_sync(meta.create_all)
