"""Schema versions of a set of tables, one mechanism for the thread store and the knowledge
index (each keeps its own version table, so each migrates on its own).

A new database gets the tables of the current version; an older one is brought up step by
step, each step in the same transaction as its version row, then `create_all` adds tables
new since (they need no step). Replicas migrating at once on PostgreSQL take turns (an
advisory lock held for the transaction); a database written by a newer gateway is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

Step = Callable[[AsyncConnection], Awaitable[None]]


@dataclasses.dataclass(frozen=True, slots=True)
class Versions:
    what: str  # named in the refusal of a newer database: "the thread store"
    table: sa.Table  # one row per version applied: (version, applied_at)
    meta: sa.MetaData
    steps: Mapping[int, Step]  # version → the step from the version before it
    lock: int  # pg_advisory_xact_lock's key
    create: Step | None = None  # after create_all: what `meta` cannot say (FTS5, GIN)

    @property
    def current(self) -> int:
        return max(self.steps)


def sync_step(step: Callable[[sa.Connection], None]) -> Step:
    """A step written against SQLAlchemy's synchronous connection (DDL helpers want one)."""

    async def run(conn: AsyncConnection) -> None:
        await conn.run_sync(step)

    return run


async def migrate(engine: AsyncEngine, versions: Versions) -> None:
    """Create the tables, bring an older database up to date, or refuse a newer one."""
    table = versions.table
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(versions.lock)))
        await conn.run_sync(table.create, checkfirst=True)
        found = (await conn.execute(sa.select(sa.func.max(table.c.version)))).scalar()
        if found is not None and found > versions.current:
            raise RuntimeError(
                f"{versions.what} has schema version {found}; this gateway knows "
                f"{versions.current}: run the newer gateway, or another database"
            )
        for version in range(found + 1, versions.current + 1) if found is not None else ():
            await versions.steps[version](conn)
            await conn.execute(table.insert().values(version=version, applied_at=_now()))
        await conn.run_sync(versions.meta.create_all)
        if versions.create is not None:
            await versions.create(conn)
        if found is None:
            await conn.execute(table.insert().values(version=versions.current, applied_at=_now()))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
