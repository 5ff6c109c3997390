"""The transaction every call of the thread and attachment stores runs in: one database's,
shared by both stores (store.py, attachment_store.py), so a database that does not
answer is one 503."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from chatkit.store import NotFoundError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .context import TurnContext
from .store_schema import StoreUnavailable, threads

log = logging.getLogger("gateway.agent.store")
T = TypeVar("T")

_DOWN = (OperationalError, InterfaceError, DBAPIError, OSError, TimeoutError)


class Transactions:
    """One database's transactions: each within a timeout; a database that does not answer
    becomes StoreUnavailable (503), counted by `on_error`."""

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

    @asynccontextmanager
    async def _tx(self, context: TurnContext | None) -> AsyncIterator[AsyncConnection]:
        try:
            async with asyncio.timeout(self._timeout), self.engine.begin() as conn:
                yield conn
        except IntegrityError:
            raise NotFoundError("conflicting id") from None  # a race on one id: not down
        except _DOWN as exc:
            self._on_error(context)
            log.warning("thread store unavailable: %s", type(exc).__name__)
            raise StoreUnavailable() from None

    async def run(
        self, context: TurnContext | None, work: Callable[[AsyncConnection], Awaitable[T]]
    ) -> T:
        async with self._tx(context) as conn:
            return await work(conn)

    async def first(self, context: TurnContext, query: sa.Select[Any], missing: str) -> Any:
        """The query's first row; none (not the user's, or no such id) is NotFoundError."""

        async def work(conn: AsyncConnection) -> Any:
            return (await conn.execute(query)).first()

        row = await self.run(context, work)
        if row is None:
            raise NotFoundError(missing)
        return row

    async def ping(self) -> bool:
        try:
            await self.run(None, lambda c: c.execute(sa.text("SELECT 1")))
        except StoreUnavailable:
            return False
        return True


async def check_thread(conn: AsyncConnection, thread_id: str, user: str) -> None:
    """NotFoundError unless the thread is the user's (another user's is not found either)."""
    q = sa.select(threads.c.id).where(threads.c.id == thread_id, threads.c.user_id == user)
    if (await conn.execute(q)).first() is None:
        raise NotFoundError(f"Thread {thread_id} not found")


async def save_owned(
    conn: AsyncConnection,
    table: sa.Table,
    row_id: str,
    user: str,
    values: dict[str, Any],
    created: dict[str, Any],
    what: str,
) -> None:
    """The user's row `row_id` updated with `values`, or inserted with `created` besides;
    an id another user holds is NotFoundError ("<what> <id> not found"), never overwritten."""
    mine = table.c.id == row_id, table.c.user_id == user
    if (await conn.execute(table.update().where(*mine).values(**values))).rowcount:
        return
    taken = sa.select(table.c.id).where(table.c.id == row_id)
    if (await conn.execute(taken)).first() is not None:
        raise NotFoundError(f"{what} {row_id} not found")
    await conn.execute(table.insert().values(id=row_id, user_id=user, **values, **created))
