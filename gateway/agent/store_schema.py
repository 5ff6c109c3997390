"""The thread store's tables and engines (SQLite through aiosqlite, PostgreSQL through
asyncpg); the transaction every store call runs in: transactions.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from ..errors import Unavailable

meta = sa.MetaData()
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # sqlite: rowid autoincrement
threads = sa.Table(
    "ckgw_threads",
    meta,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Index("ckgw_threads_user", "user_id", "created_at"),
    sa.Index("ckgw_threads_updated", "updated_at"),
)
items = sa.Table(
    "ckgw_items",
    meta,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("thread_id", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.UniqueConstraint("thread_id", "id", name="ckgw_items_thread_item"),
)
attachments = sa.Table(
    "ckgw_attachments",
    meta,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("thread_id", sa.String(128), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Column("content", sa.LargeBinary(), nullable=True),  # null until uploaded
    # Since version 2: who stored the bytes (a keyed hash of the client's network) and how
    # many, so the caps per address and per store are sums over small columns.
    sa.Column("client", sa.String(64), nullable=True),
    sa.Column("size", sa.BigInteger(), nullable=True),
    sa.Index("ckgw_attachments_user", "user_id"),
    sa.Index("ckgw_attachments_thread", "thread_id"),
    sa.Index("ckgw_attachments_client", "client"),
)
# Since version 3: the widget's thumbs (items.feedback), one row per rated item; a later
# rating of the item replaces the row. Deleted with the thread (store.py, the sweep).
feedback = sa.Table(
    "ckgw_feedback",
    meta,
    sa.Column("thread_id", sa.String(128), primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # positive | negative
    sa.Column("created_at", sa.DateTime(), nullable=False),
)
schema = sa.Table(
    "ckgw_schema",
    meta,
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("applied_at", sa.DateTime(), nullable=False),
)


class StoreUnavailable(Unavailable):
    message = "Thread store unavailable"


def sqlalchemy_url(url: str) -> str:
    """The policy's `sqlite:///…` / `postgresql://…` with the async driver named."""
    scheme, rest = url.split(":", 1)
    if scheme.lower() == "sqlite":
        return "sqlite+aiosqlite:" + rest
    return "postgresql+asyncpg:" + rest


def open_engine(url: str, *, timeout: float, pool_size: int) -> AsyncEngine:
    target = sqlalchemy_url(url)
    if target.startswith("sqlite"):
        path = target.removeprefix("sqlite+aiosqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite runs one writer at a time anyway, and several connections
        # in transactions fail each other with "database is locked" under load instead
        # of queueing; one connection queues them in the pool, in order.
        engine = create_async_engine(
            target,
            poolclass=AsyncAdaptedQueuePool,  # SQLAlchemy 2.0 defaults to none for SQLite
            pool_size=1,
            max_overflow=0,
            pool_timeout=timeout,
            connect_args={"timeout": timeout},
        )
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        target,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a restarted PostgreSQL: stale connections replaced, not failed
        pool_timeout=timeout,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    """WAL: readers do not wait for the writer, so concurrent conversations do not queue
    behind each other's saves (and a busy database is not mistaken for a down one)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
