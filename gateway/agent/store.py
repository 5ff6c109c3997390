"""ChatKit's `Store` and `AttachmentStore` on SQLAlchemy's async core: SQLite or PostgreSQL.

One implementation over both dialects (aiosqlite, asyncpg). Every statement carries the
requesting user: another user's thread, item or attachment is not found, exactly like an
id that never existed. Items keep their insertion order in `seq`; objects are stored as
the SDK's own JSON, so a newer SDK reads what an older one wrote. Any failure to reach
the database becomes `StoreUnavailable` (503 before a stream starts).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from chatkit.store import AttachmentStore, NotFoundError, Store
from chatkit.types import (
    Attachment,
    AttachmentCreateParams,
    Page,
    ThreadItem,
    ThreadMetadata,
)
from pydantic import TypeAdapter
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..errors import Unavailable
from .context import TurnContext

log = logging.getLogger("gateway.agent.store")
SCHEMA_VERSION = 1
MAX_PAGE = 100  # a client's `limit` is capped: one answer's size stays bounded
_ITEM = TypeAdapter[ThreadItem](ThreadItem)
_ATTACHMENT = TypeAdapter[Attachment](Attachment)
T = TypeVar("T")

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
    sa.Index("ckgw_attachments_user", "user_id"),
    sa.Index("ckgw_attachments_thread", "thread_id"),
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


async def migrate(engine: AsyncEngine) -> None:
    """Create the tables, or refuse a database written by a newer gateway."""
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
        found = (await conn.execute(sa.select(sa.func.max(schema.c.version)))).scalar()
        if found is None:
            await conn.execute(schema.insert().values(version=SCHEMA_VERSION, applied_at=_now()))
        elif found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the thread store has schema version {found}; this gateway knows "
                f"{SCHEMA_VERSION}: run the newer gateway, or another database"
            )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


_DOWN = (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError)


class SqlStore(Store[TurnContext], AttachmentStore[TurnContext]):
    """The thread store of one database; routes sharing a URL share one."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        timeout: float,
        on_error: Callable[[TurnContext | None], None],
    ) -> None:
        self.engine = engine
        self._timeout = timeout
        self._on_error = on_error
        self.healthy = True
        self.upload_url: Callable[[str, TurnContext], str] | None = None

    @asynccontextmanager
    async def _tx(self, context: TurnContext | None) -> AsyncIterator[AsyncConnection]:
        try:
            async with asyncio.timeout(self._timeout), self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise NotFoundError("conflicting id") from None  # a race on one id: not down
        except _DOWN as exc:
            self.healthy = False
            self._on_error(context)
            log.warning("thread store unavailable: %s", type(exc).__name__)
            raise StoreUnavailable() from None
        self.healthy = True

    async def _run(
        self, context: TurnContext | None, work: Callable[[AsyncConnection], Awaitable[T]]
    ) -> T:
        async with self._tx(context) as conn:
            return await work(conn)

    async def ping(self) -> bool:
        try:
            await self._run(None, lambda c: c.execute(sa.text("SELECT 1")))
        except StoreUnavailable:
            return False
        return True

    # -- threads --------------------------------------------------------------------
    async def load_thread(self, thread_id: str, context: TurnContext) -> ThreadMetadata:
        async def work(conn: AsyncConnection) -> str | None:
            q = sa.select(threads.c.data).where(
                threads.c.id == thread_id, threads.c.user_id == context.user
            )
            return (await conn.execute(q)).scalar()

        data = await self._run(context, work)
        if data is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata.model_validate_json(data)

    async def save_thread(self, thread: ThreadMetadata, context: TurnContext) -> None:
        data = thread.model_dump_json()

        async def work(conn: AsyncConnection) -> None:
            now = _now()
            done = await conn.execute(
                threads.update()
                .where(threads.c.id == thread.id, threads.c.user_id == context.user)
                .values(data=data, updated_at=now)
            )
            if done.rowcount == 0:
                taken = await conn.execute(sa.select(threads.c.id).where(threads.c.id == thread.id))
                if taken.first() is not None:  # another user's id: never overwritten
                    raise NotFoundError(f"Thread {thread.id} not found")
                created = thread.created_at.astimezone(dt.UTC).replace(tzinfo=None)
                await conn.execute(
                    threads.insert().values(
                        id=thread.id, user_id=context.user, created_at=created,
                        updated_at=now, data=data,
                    )
                )  # fmt: skip

        await self._run(context, work)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: TurnContext
    ) -> Page[ThreadMetadata]:
        desc = order != "asc"
        limit = max(1, min(limit, MAX_PAGE))

        async def work(conn: AsyncConnection) -> list[str]:
            q = sa.select(threads.c.data).where(threads.c.user_id == context.user)
            if after is not None:
                row = (
                    await conn.execute(
                        sa.select(threads.c.created_at, threads.c.id).where(
                            threads.c.id == after, threads.c.user_id == context.user
                        )
                    )
                ).first()
                if row is not None:
                    key = sa.tuple_(threads.c.created_at, threads.c.id)
                    q = q.where(key < tuple(row) if desc else key > tuple(row))
            cols = (threads.c.created_at, threads.c.id)
            q = q.order_by(*(c.desc() if desc else c.asc() for c in cols)).limit(limit + 1)
            return list((await conn.execute(q)).scalars())

        rows = await self._run(context, work)
        data = [ThreadMetadata.model_validate_json(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(data=data, has_more=more, after=data[-1].id if more and data else None)

    async def delete_thread(self, thread_id: str, context: TurnContext) -> None:
        async def work(conn: AsyncConnection) -> None:
            user = context.user
            mine = threads.c.id == thread_id, threads.c.user_id == user
            if (await conn.execute(sa.select(threads.c.id).where(*mine))).first() is None:
                raise NotFoundError(f"Thread {thread_id} not found")
            await conn.execute(
                items.delete().where(items.c.thread_id == thread_id, items.c.user_id == user)
            )
            await conn.execute(
                attachments.delete().where(
                    attachments.c.thread_id == thread_id, attachments.c.user_id == user
                )
            )
            await conn.execute(threads.delete().where(*mine))

        await self._run(context, work)

    # -- items ----------------------------------------------------------------------
    async def _owned(self, conn: AsyncConnection, thread_id: str, user: str) -> None:
        q = sa.select(threads.c.id).where(threads.c.id == thread_id, threads.c.user_id == user)
        if (await conn.execute(q)).first() is None:
            raise NotFoundError(f"Thread {thread_id} not found")

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: TurnContext
    ) -> Page[ThreadItem]:
        desc = order == "desc"
        limit = max(1, min(limit, MAX_PAGE))

        async def work(conn: AsyncConnection) -> list[str]:
            mine = (items.c.thread_id == thread_id, items.c.user_id == context.user)
            q = sa.select(items.c.data).where(*mine)
            if after is not None:
                seq = sa.select(items.c.seq).where(*mine, items.c.id == after).scalar_subquery()
                q = q.where(items.c.seq < seq if desc else items.c.seq > seq)
            q = q.order_by(items.c.seq.desc() if desc else items.c.seq.asc()).limit(limit + 1)
            found = list((await conn.execute(q)).scalars())
            if not found:  # items carry their user: only an empty page asks whose thread
                await self._owned(conn, thread_id, context.user)
            return found

        rows = await self._run(context, work)
        data = [_ITEM.validate_json(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(data=data, has_more=more, after=data[-1].id if more and data else None)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: TurnContext) -> None:
        await self._write_item(thread_id, item, context, new=True)

    async def save_item(self, thread_id: str, item: ThreadItem, context: TurnContext) -> None:
        await self._write_item(thread_id, item, context, new=False)

    async def _write_item(
        self, thread_id: str, item: ThreadItem, context: TurnContext, *, new: bool
    ) -> None:
        """Two statements for a new item: touching the thread (which proves it is the
        user's, and keeps it from the retention sweep) and the insert."""
        data = item.model_dump_json()

        async def work(conn: AsyncConnection) -> None:
            touched = await conn.execute(
                threads.update()
                .where(threads.c.id == thread_id, threads.c.user_id == context.user)
                .values(updated_at=_now())
            )
            if touched.rowcount == 0:
                raise NotFoundError(f"Thread {thread_id} not found")
            if not new:
                done = await conn.execute(
                    items.update()
                    .where(items.c.thread_id == thread_id, items.c.id == item.id)
                    .values(data=data)
                )
                if done.rowcount:
                    return
            await conn.execute(
                items.insert().values(
                    id=item.id, thread_id=thread_id, user_id=context.user, data=data
                )
            )

        await self._run(context, work)

    async def load_item(self, thread_id: str, item_id: str, context: TurnContext) -> ThreadItem:
        async def work(conn: AsyncConnection) -> str | None:
            q = sa.select(items.c.data).where(
                items.c.thread_id == thread_id,
                items.c.id == item_id,
                items.c.user_id == context.user,
            )
            return (await conn.execute(q)).scalar()

        data = await self._run(context, work)
        if data is None:
            raise NotFoundError(f"Item {item_id} not found")
        return _ITEM.validate_json(data)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: TurnContext) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                items.delete().where(
                    items.c.thread_id == thread_id,
                    items.c.id == item_id,
                    items.c.user_id == context.user,
                )
            )

        await self._run(context, work)

    # -- attachments ----------------------------------------------------------------
    async def create_attachment(
        self, input: AttachmentCreateParams, context: TurnContext
    ) -> Attachment:
        """Phase one of the SDK's two-phase upload: the record, and where to send the bytes."""
        from .attachment_policy import new_attachment  # the policy's caps live there

        async def count(conn: AsyncConnection) -> int:
            q = sa.select(sa.func.count()).where(attachments.c.user_id == context.user)
            return int((await conn.execute(q)).scalar() or 0)

        held = await self._run(context, count)
        return new_attachment(input, context, held, self.generate_attachment_id)

    async def save_attachment(self, attachment: Attachment, context: TurnContext) -> None:
        data = attachment.model_dump_json()

        async def work(conn: AsyncConnection) -> None:
            done = await conn.execute(
                attachments.update()
                .where(attachments.c.id == attachment.id, attachments.c.user_id == context.user)
                .values(data=data, thread_id=attachment.thread_id)
            )
            if done.rowcount == 0:
                taken = sa.select(attachments.c.id).where(attachments.c.id == attachment.id)
                if (await conn.execute(taken)).first() is not None:
                    raise NotFoundError(f"Attachment {attachment.id} not found")
                await conn.execute(
                    attachments.insert().values(
                        id=attachment.id, user_id=context.user, thread_id=attachment.thread_id,
                        created_at=_now(), data=data,
                    )
                )  # fmt: skip

        await self._run(context, work)

    async def load_attachment(self, attachment_id: str, context: TurnContext) -> Attachment:
        row = await self._attachment_row(attachment_id, context, content=False)
        return _ATTACHMENT.validate_json(row[0])

    async def load_attachment_content(
        self, attachment_id: str, context: TurnContext
    ) -> tuple[Attachment, bytes | None]:
        row = await self._attachment_row(attachment_id, context, content=True)
        return _ATTACHMENT.validate_json(row[0]), row[1]

    async def _attachment_row(
        self, attachment_id: str, context: TurnContext, *, content: bool
    ) -> tuple[str, bytes | None]:
        cols = [attachments.c.data] + ([attachments.c.content] if content else [])

        async def work(conn: AsyncConnection) -> Any:
            q = sa.select(*cols).where(
                attachments.c.id == attachment_id, attachments.c.user_id == context.user
            )
            return (await conn.execute(q)).first()

        row = await self._run(context, work)
        if row is None:
            raise NotFoundError(f"Attachment {attachment_id} not found")
        return (row[0], row[1] if content else None)

    async def put_attachment_content(
        self, attachment: Attachment, content: bytes, context: TurnContext
    ) -> None:
        """Phase two: the bytes arrived; the record loses its upload descriptor."""
        done = attachment.model_copy(update={"upload_descriptor": None})
        data = done.model_dump_json()

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                attachments.update()
                .where(attachments.c.id == attachment.id, attachments.c.user_id == context.user)
                .values(content=content, data=data)
            )

        await self._run(context, work)

    async def delete_attachment(self, attachment_id: str, context: TurnContext) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                attachments.delete().where(
                    attachments.c.id == attachment_id, attachments.c.user_id == context.user
                )
            )

        await self._run(context, work)

    # -- retention ------------------------------------------------------------------
    async def sweep(self, older_than_seconds: float) -> int:
        """Delete threads (with their items and attachments) untouched for that long, and
        attachments never sent in a message; returns the threads deleted."""
        cutoff = _now() - dt.timedelta(seconds=older_than_seconds)

        async def work(conn: AsyncConnection) -> int:
            old = sa.select(threads.c.id).where(threads.c.updated_at < cutoff)
            await conn.execute(items.delete().where(items.c.thread_id.in_(old)))
            await conn.execute(attachments.delete().where(attachments.c.thread_id.in_(old)))
            await conn.execute(
                attachments.delete().where(
                    attachments.c.thread_id.is_(None), attachments.c.created_at < cutoff
                )
            )
            done = await conn.execute(threads.delete().where(threads.c.updated_at < cutoff))
            return int(done.rowcount or 0)

        return await self._run(None, work)
