"""Attachment rows of the thread store: metadata and bytes, always with their user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from chatkit.store import NotFoundError
from chatkit.types import Attachment, AttachmentCreateParams
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncConnection

from .context import TurnContext
from .store_schema import Transactions, _now, attachments

_ATTACHMENT = TypeAdapter[Attachment](Attachment)


class AttachmentRows(Transactions):
    if TYPE_CHECKING:  # the SDK's AttachmentStore provides it (SqlStore)

        def generate_attachment_id(self, mime_type: str, context: TurnContext) -> str: ...

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
