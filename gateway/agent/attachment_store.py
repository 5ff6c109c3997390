"""ChatKit's `AttachmentStore` (the SDK's second seam beside the thread store): phase one
of the two-phase upload, the bytes, and the records, always with their user; the stored
bytes counted per client address and per store (the caps: attachment_admission.py). It
runs in the thread store's transactions: one database, one 503."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from chatkit.store import AttachmentStore
from chatkit.types import Attachment, AttachmentCreateParams
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection

from .attachment_admission import Held, check_room, client_tag, new_attachment
from .context import TurnContext
from .store_schema import _now, attachments
from .transactions import Transactions, save_owned

_ATTACHMENT = TypeAdapter[Attachment](Attachment)
_CAPS_LOCK = 0x636B_6761  # pg_advisory_xact_lock's key for the byte caps


async def _held(conn: AsyncConnection, tag: str, count: int = 0) -> Held:
    size = sa.func.coalesce(sa.func.sum(attachments.c.size), 0)
    mine = sa.select(size).where(attachments.c.client == tag).scalar_subquery()
    row = (await conn.execute(sa.select(mine, sa.select(size).scalar_subquery()))).one()
    return Held(count, int(row[0]), int(row[1]))


class SqlAttachmentStore(AttachmentStore[TurnContext]):
    """The attachments of one database; the thread store's `save_attachment`,
    `load_attachment` and `delete_attachment` (the SDK asks the `Store` for records) are
    these."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def create_attachment(
        self, input: AttachmentCreateParams, context: TurnContext
    ) -> Attachment:
        """Phase one of the SDK's two-phase upload: the record, and where to send the bytes."""

        async def work(conn: AsyncConnection) -> Held:
            q = sa.select(sa.func.count()).where(attachments.c.user_id == context.user)
            count = int((await conn.execute(q)).scalar() or 0)
            return await _held(conn, client_tag(context), count)

        held = await self._tx.run(context, work)
        return new_attachment(input, context, held, self.generate_attachment_id)

    async def save_attachment(self, attachment: Attachment, context: TurnContext) -> None:
        data = attachment.model_dump_json()

        changed = {"data": data, "thread_id": attachment.thread_id}
        created = {"created_at": _now(), "client": client_tag(context)}

        async def work(conn: AsyncConnection) -> None:
            user = context.user
            await save_owned(conn, attachments, attachment.id, user, changed, created, "Attachment")

        await self._tx.run(context, work)

    async def load_attachment(self, attachment_id: str, context: TurnContext) -> Attachment:
        row = await self._attachment_row(attachment_id, context)
        return _ATTACHMENT.validate_json(row[0])

    async def load_attachment_size(
        self, attachment_id: str, context: TurnContext
    ) -> tuple[Attachment, int | None]:
        """The record and its stored size (None until uploaded), without the bytes."""
        size = sa.func.length(attachments.c.content)
        row = await self._attachment_row(attachment_id, context, size)
        return _ATTACHMENT.validate_json(row[0]), None if row[1] is None else int(row[1])

    async def load_attachment_content(
        self, attachment_id: str, context: TurnContext
    ) -> tuple[Attachment, bytes | None]:
        row = await self._attachment_row(attachment_id, context, attachments.c.content)
        return _ATTACHMENT.validate_json(row[0]), row[1]

    async def _attachment_row(
        self, attachment_id: str, context: TurnContext, *extra: sa.ColumnElement[Any]
    ) -> Any:
        """The record's JSON (and `extra`), the user's only."""
        q = sa.select(attachments.c.data, *extra).where(
            attachments.c.id == attachment_id, attachments.c.user_id == context.user
        )
        return await self._tx.first(context, q, f"Attachment {attachment_id} not found")

    async def put_attachment_content(
        self, attachment: Attachment, content: bytes, context: TurnContext
    ) -> None:
        """Phase two: the bytes arrived, within the address's and the store's caps (checked
        in the write's transaction; on PostgreSQL uploads take turns for it, so replicas
        cannot both pass a cap); the record loses its upload descriptor."""
        done = attachment.model_copy(update={"upload_descriptor": None})
        data = done.model_dump_json()
        tag = client_tag(context)
        config = context.attachments

        async def work(conn: AsyncConnection) -> None:
            if config is not None:
                if conn.dialect.name == "postgresql":
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_CAPS_LOCK)))
                check_room(config, await _held(conn, tag), len(content))
            await conn.execute(
                attachments.update()
                .where(attachments.c.id == attachment.id, attachments.c.user_id == context.user)
                .values(content=content, data=data, client=tag, size=len(content))
            )

        await self._tx.run(context, work)

    async def attachment_sizes(self, ids: list[str], context: TurnContext) -> dict[str, int]:
        """The stored size of each of the user's uploaded attachments among `ids`."""
        if not ids:
            return {}
        size = sa.func.length(attachments.c.content)

        async def work(conn: AsyncConnection) -> dict[str, int]:
            q = sa.select(attachments.c.id, size).where(
                attachments.c.id.in_(ids),
                attachments.c.user_id == context.user,
                attachments.c.content.is_not(None),
            )
            return {row[0]: int(row[1]) for row in await conn.execute(q)}

        return await self._tx.run(context, work)

    async def read_attachment_chunk(
        self, attachment_id: str, context: TurnContext, offset: int, length: int
    ) -> bytes:
        """`length` bytes from `offset` of the stored content (fewer at its end; none when
        it is gone), so a preview never holds the whole file."""
        piece = sa.func.substr(attachments.c.content, offset + 1, length, type_=sa.LargeBinary)

        async def work(conn: AsyncConnection) -> bytes:
            q = sa.select(piece).where(
                attachments.c.id == attachment_id, attachments.c.user_id == context.user
            )
            found = (await conn.execute(q)).scalar()
            return bytes(found) if found else b""

        return await self._tx.run(context, work)

    async def delete_attachment(self, attachment_id: str, context: TurnContext) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                attachments.delete().where(
                    attachments.c.id == attachment_id, attachments.c.user_id == context.user
                )
            )

        await self._tx.run(context, work)
