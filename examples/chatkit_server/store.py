"""An in-memory ChatKit Store, one namespace per user. Swap in a database for production.

ChatKit passes the request `context` to every Store call; here it carries the user, so
one user's `threads.list` never shows another's threads. Everything is lost on restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatkit.store import AttachmentStore, NotFoundError, Store
from chatkit.types import Attachment, Page, ThreadItem, ThreadMetadata

Context = dict[str, Any]  # {"user": "<opaque id>"}


@dataclass
class _UserData:
    threads: dict[str, ThreadMetadata] = field(default_factory=dict)
    items: dict[str, list[ThreadItem]] = field(default_factory=dict)
    attachments: dict[str, Attachment] = field(default_factory=dict)


def _page(rows: list[Any], after: str | None, limit: int, order: str) -> Page[Any]:
    if order == "desc":
        rows = rows[::-1]
    if after is not None:
        ids = [r.id for r in rows]
        rows = rows[ids.index(after) + 1 :] if after in ids else []
    page = rows[:limit]
    more = len(rows) > limit
    return Page(data=page, has_more=more, after=page[-1].id if more and page else None)


class MemoryStore(Store[Context]):
    def __init__(self) -> None:
        self._users: dict[str, _UserData] = {}

    def _of(self, context: Context) -> _UserData:
        return self._users.setdefault(context["user"], _UserData())

    async def load_thread(self, thread_id: str, context: Context) -> ThreadMetadata:
        try:
            return self._of(context).threads[thread_id]
        except KeyError:
            raise NotFoundError(f"thread {thread_id} not found") from None

    async def save_thread(self, thread: ThreadMetadata, context: Context) -> None:
        data = self._of(context)
        data.threads[thread.id] = ThreadMetadata(**thread.model_dump())
        data.items.setdefault(thread.id, [])

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: Context
    ) -> Page[ThreadItem]:
        return _page(list(self._of(context).items.get(thread_id, [])), after, limit, order)

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: Context
    ) -> Page[ThreadMetadata]:
        threads = sorted(self._of(context).threads.values(), key=lambda t: t.created_at)
        return _page(threads, after, limit, order)

    async def add_thread_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        self._of(context).items.setdefault(thread_id, []).append(item)

    async def save_item(self, thread_id: str, item: ThreadItem, context: Context) -> None:
        items = self._of(context).items.setdefault(thread_id, [])
        for i, old in enumerate(items):
            if old.id == item.id:
                items[i] = item
                return
        items.append(item)

    async def load_item(self, thread_id: str, item_id: str, context: Context) -> ThreadItem:
        for item in self._of(context).items.get(thread_id, []):
            if item.id == item_id:
                return item
        raise NotFoundError(f"item {item_id} not found")

    async def delete_thread(self, thread_id: str, context: Context) -> None:
        data = self._of(context)
        data.threads.pop(thread_id, None)
        data.items.pop(thread_id, None)

    async def delete_thread_item(self, thread_id: str, item_id: str, context: Context) -> None:
        data = self._of(context)
        data.items[thread_id] = [i for i in data.items.get(thread_id, []) if i.id != item_id]

    async def save_attachment(self, attachment: Attachment, context: Context) -> None:
        self._of(context).attachments[attachment.id] = attachment

    async def load_attachment(self, attachment_id: str, context: Context) -> Attachment:
        try:
            return self._of(context).attachments[attachment_id]
        except KeyError:
            raise NotFoundError(f"attachment {attachment_id} not found") from None

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        self._of(context).attachments.pop(attachment_id, None)


class MemoryFiles(AttachmentStore[Context]):
    """Uploaded bytes by attachment id; the metadata lives in the Store."""

    def __init__(self, upload_base_url: str) -> None:
        self.upload_base_url = upload_base_url.rstrip("/")  # as the browser must call it
        self.blobs: dict[str, bytes] = {}

    async def delete_attachment(self, attachment_id: str, context: Context) -> None:
        self.blobs.pop(attachment_id, None)
