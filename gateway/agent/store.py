"""ChatKit's `Store` on SQLAlchemy's async core: SQLite or PostgreSQL; its
`AttachmentStore` beside it (attachment_store.py, `SqlStore.attachments`).

One implementation over both dialects (aiosqlite, asyncpg). Every statement carries the
requesting user: another user's thread, item or attachment is not found, exactly like an
id that never existed. Items keep their insertion order in `seq`; objects are stored as
the SDK's own JSON, so a newer SDK reads what an older one wrote. Any failure to reach
the database becomes `StoreUnavailable` (503 before a stream starts).
"""

from __future__ import annotations

import datetime as dt
import functools

import sqlalchemy as sa
from chatkit.store import NotFoundError, Store
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection

from .attachment_store import SqlAttachmentStore
from .context import TurnContext
from .feedback_rows import FeedbackRows
from .store_migrations import migrate
from .store_schema import StoreUnavailable, _now, attachments, feedback, items, open_engine, threads
from .transactions import check_thread, save_owned

__all__ = ["SqlStore", "StoreUnavailable", "migrate", "open_engine"]
MAX_PAGE = 100  # a client's `limit` is capped: one answer's size stays bounded
UNSENT_SECONDS = 3600.0  # an upload no message carried is swept after this (SECURITY.md)
_ITEM = TypeAdapter[ThreadItem](ThreadItem)


class SqlStore(FeedbackRows, Store[TurnContext]):
    """The thread store of one database; routes sharing a URL share one."""

    @functools.cached_property
    def attachments(self) -> SqlAttachmentStore:
        """ChatKitServer's second argument: the same database's transactions."""
        return SqlAttachmentStore(self)

    # -- attachment records: the attachment store's rows ------------------------------
    async def save_attachment(self, attachment: Attachment, context: TurnContext) -> None:
        await self.attachments.save_attachment(attachment, context)

    async def load_attachment(self, attachment_id: str, context: TurnContext) -> Attachment:
        return await self.attachments.load_attachment(attachment_id, context)

    async def delete_attachment(self, attachment_id: str, context: TurnContext) -> None:
        await self.attachments.delete_attachment(attachment_id, context)

    # -- threads --------------------------------------------------------------------
    async def load_thread(self, thread_id: str, context: TurnContext) -> ThreadMetadata:
        mine = threads.c.id == thread_id, threads.c.user_id == context.user
        row = await self.first(
            context, sa.select(threads.c.data).where(*mine), f"Thread {thread_id} not found"
        )
        return ThreadMetadata.model_validate_json(row[0])

    async def save_thread(self, thread: ThreadMetadata, context: TurnContext) -> None:
        data = thread.model_dump_json()
        created = {"created_at": thread.created_at.astimezone(dt.UTC).replace(tzinfo=None)}

        async def work(conn: AsyncConnection) -> None:
            changed = {"data": data, "updated_at": _now()}
            await save_owned(conn, threads, thread.id, context.user, changed, created, "Thread")

        await self.run(context, work)

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

        rows = await self.run(context, work)
        data = [ThreadMetadata.model_validate_json(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(data=data, has_more=more, after=data[-1].id if more and data else None)

    async def delete_thread(self, thread_id: str, context: TurnContext) -> None:
        async def work(conn: AsyncConnection) -> None:
            user = context.user
            await check_thread(conn, thread_id, user)
            for table in (items, feedback, attachments):
                await conn.execute(
                    table.delete().where(table.c.thread_id == thread_id, table.c.user_id == user)
                )
            await conn.execute(
                threads.delete().where(threads.c.id == thread_id, threads.c.user_id == user)
            )

        await self.run(context, work)

    # -- items ----------------------------------------------------------------------
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
                await check_thread(conn, thread_id, context.user)
            return found

        rows = await self.run(context, work)
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

        await self.run(context, work)

    async def load_item(self, thread_id: str, item_id: str, context: TurnContext) -> ThreadItem:
        q = sa.select(items.c.data).where(
            items.c.thread_id == thread_id,
            items.c.id == item_id,
            items.c.user_id == context.user,
        )
        row = await self.first(context, q, f"Item {item_id} not found")
        return _ITEM.validate_json(row[0])

    async def delete_thread_item(self, thread_id: str, item_id: str, context: TurnContext) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                items.delete().where(
                    items.c.thread_id == thread_id,
                    items.c.id == item_id,
                    items.c.user_id == context.user,
                )
            )
            await conn.execute(
                feedback.delete().where(
                    feedback.c.thread_id == thread_id,
                    feedback.c.item_id == item_id,
                    feedback.c.user_id == context.user,
                )
            )

        await self.run(context, work)

    # -- retention ------------------------------------------------------------------
    async def sweep(
        self, older_than_seconds: float | None, unsent_seconds: float = UNSENT_SECONDS
    ) -> int:
        """Delete threads (with their items and attachments) untouched for
        `older_than_seconds` (None: kept forever), and uploads no message carried within
        `unsent_seconds`: bytes sent nowhere are not kept for the retention; returns the
        threads deleted."""
        now = _now()
        unsent = now - dt.timedelta(seconds=min(unsent_seconds, older_than_seconds or 1e12))

        async def work(conn: AsyncConnection) -> int:
            await conn.execute(
                attachments.delete().where(
                    attachments.c.thread_id.is_(None), attachments.c.created_at < unsent
                )
            )
            if older_than_seconds is None:
                return 0
            cutoff = now - dt.timedelta(seconds=older_than_seconds)
            old = sa.select(threads.c.id).where(threads.c.updated_at < cutoff)
            for table in (items, feedback, attachments):
                await conn.execute(table.delete().where(table.c.thread_id.in_(old)))
            done = await conn.execute(threads.delete().where(threads.c.updated_at < cutoff))
            return int(done.rowcount or 0)

        return await self.run(None, work)
