"""The widget's thumbs (`items.feedback`, SPEC §10), kept with the item, the user and the
time: only on items of the caller's own threads, one row per item (a later rating
replaces the earlier). Rows go with their thread (store.py: delete_thread, the sweep)."""

from __future__ import annotations

import sqlalchemy as sa
from chatkit.store import NotFoundError
from sqlalchemy.ext.asyncio import AsyncConnection

from .context import TurnContext
from .store_schema import _now, feedback, items
from .transactions import Transactions, check_thread

KINDS = ("positive", "negative")
MAX_ITEMS = 100  # item ids one request may rate: a request's cost stays bounded


class FeedbackRows(Transactions):
    async def save_feedback(
        self, thread_id: str, item_ids: list[str], kind: str, context: TurnContext
    ) -> int:
        """Store `kind` for each item; returns the items rated. A thread or item that is not
        the caller's is NotFoundError (404, as an unknown id), and nothing is stored."""
        if kind not in KINDS:
            raise ValueError(f"feedback kind {kind!r}")
        wanted = list(dict.fromkeys(item_ids))
        if not wanted or len(wanted) > MAX_ITEMS:
            raise NotFoundError("no such items")

        async def work(conn: AsyncConnection) -> int:
            user = context.user
            await check_thread(conn, thread_id, user)
            q = sa.select(items.c.id).where(
                items.c.thread_id == thread_id, items.c.user_id == user, items.c.id.in_(wanted)
            )
            found = set((await conn.execute(q)).scalars())
            if len(found) != len(wanted):
                raise NotFoundError("Item not found")
            now = _now()
            await conn.execute(
                feedback.delete().where(
                    feedback.c.thread_id == thread_id, feedback.c.item_id.in_(wanted)
                )
            )
            await conn.execute(
                feedback.insert(),
                [
                    {"thread_id": thread_id, "item_id": i, "user_id": user, "kind": kind,
                     "created_at": now}
                    for i in wanted
                ],
            )  # fmt: skip
            return len(wanted)

        return await self.run(context, work)
