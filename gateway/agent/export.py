"""`chatkit-gateway conversations`: a route's threads as the site owner reads them (SPEC §10).

One record per thread — its id, title, times, the user (the keyed hash the store keeps,
never a device id, an address or a header value) and its messages in order (role, text,
time, the sources cited, the feedback given); attachments by name and type, never their
bytes. `--summary` counts per day what a site owner acts on: threads, visitors' messages,
negative feedback, and answers that cited nothing (the questions the site's pages do not
answer yet).

One query, streamed (a server-side cursor on PostgreSQL, SQLite's stepping cursor, `yield_per`
rows at a time) and grouped by thread as it arrives: memory holds one thread, whatever the
store's size. It is one statement, so it reads one consistent snapshot while `serve` goes
on writing (SQLite in WAL mode, PostgreSQL's MVCC).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .store_schema import feedback, items, threads

YIELD_PER = 500  # rows fetched from the cursor at a time
FEEDBACK_SINCE = 3  # the schema version that keeps feedback (store_migrations.py)
CSV_COLUMNS = (
    "id", "title", "created_at", "updated_at", "user", "messages", "answers",
    "positive", "negative", "items",
)  # fmt: skip


@dataclass(slots=True)
class Day:
    threads: int = 0
    messages: int = 0  # the visitors'
    negative: int = 0
    uncited: int = 0  # answers citing no source


@dataclass(slots=True)
class Summary:
    days: dict[str, Day] = field(default_factory=dict)

    def day(self, when: str) -> Day:
        return self.days.setdefault(when[:10], Day())

    def add(self, record: dict[str, Any]) -> None:
        self.day(record["created_at"]).threads += 1
        for item in record["items"]:
            day = self.day(item["created_at"])
            if item["role"] == "user":
                day.messages += 1
            elif not item["sources"]:
                day.uncited += 1
            if item["feedback"] == "negative":
                day.negative += 1

    def lines(self) -> Iterator[str]:
        yield f"{'day':<10}  {'threads':>8}  {'messages':>8}  {'negative':>8}  {'uncited':>8}"
        total = Day()
        for name in sorted(self.days):
            d = self.days[name]
            total.threads, total.messages = total.threads + d.threads, total.messages + d.messages
            total.negative, total.uncited = total.negative + d.negative, total.uncited + d.uncited
            yield _row(name, d)
        yield _row("total", total)


def _row(name: str, d: Day) -> str:
    return f"{name:<10}  {d.threads:>8}  {d.messages:>8}  {d.negative:>8}  {d.uncited:>8}"


def _utc(value: dt.datetime) -> str:
    """A store column (naive UTC) as ISO 8601 with its zone."""
    return value.replace(tzinfo=dt.UTC).isoformat().replace("+00:00", "Z")


def _item_time(raw: object) -> str:
    """An item's own `created_at` (the SDK's: naive local time of the process that wrote
    it, or with a zone) in UTC."""
    try:
        when = dt.datetime.fromisoformat(str(raw))
    except ValueError:
        return str(raw)
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _sources(content: list[Any]) -> list[dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for part in content:
        for note in part.get("annotations") or () if isinstance(part, dict) else ():
            source = note.get("source") if isinstance(note, dict) else None
            if not isinstance(source, dict):
                continue
            where = source.get("url") or source.get("filename") or source.get("id") or ""
            kind = str(source.get("type", ""))
            entry = {"type": kind, "title": str(source.get("title", ""))}
            entry["url" if kind == "url" else "filename" if kind == "file" else "id"] = where
            found.setdefault(f"{kind}:{where}", entry)
    return list(found.values())


def message(data: str, rating: str | None) -> dict[str, Any] | None:
    """A stored item as exported; None for what is not a message (tasks, hidden context)."""
    item = json.loads(data)
    kind = item.get("type")
    content = item.get("content") if isinstance(item.get("content"), list) else []
    parts = [p for p in content if isinstance(p, dict)]
    if kind == "user_message":
        text = " ".join(str(p.get("text", "")) for p in parts if "text" in p)
        out: dict[str, Any] = {"id": item.get("id"), "role": "user", "text": text}
        files = [a for a in item.get("attachments") or () if isinstance(a, dict)]
        out["attachments"] = [
            {"name": a.get("name"), "mime_type": a.get("mime_type")} for a in files
        ]
        out["sources"] = []
    elif kind == "assistant_message":
        text = "".join(str(p.get("text", "")) for p in parts)
        out = {"id": item.get("id"), "role": "assistant", "text": text, "sources": _sources(parts)}
    else:
        return None
    out["created_at"] = _item_time(item.get("created_at"))
    out["feedback"] = rating
    return out


async def thread_records(
    engine: AsyncEngine, since: dt.datetime | None, *, with_feedback: bool = True
) -> AsyncIterator[dict[str, Any]]:
    """Each thread touched since `since` (all: None), oldest first, with its messages."""
    t, i = threads, items
    on_items = sa.and_(i.c.thread_id == t.c.id, i.c.user_id == t.c.user_id)
    joined = t.outerjoin(i, on_items)
    rating: Any = sa.null()
    if with_feedback:
        f = feedback
        joined = joined.outerjoin(f, sa.and_(f.c.thread_id == i.c.thread_id, f.c.item_id == i.c.id))
        rating = f.c.kind
    q = (
        sa.select(t.c.id, t.c.user_id, t.c.created_at, t.c.updated_at, t.c.data, i.c.data, rating)
        .select_from(joined)
        .order_by(t.c.created_at, t.c.id, i.c.seq)
        .execution_options(yield_per=YIELD_PER)
    )
    if since is not None:
        q = q.where(t.c.updated_at >= since)
    record: dict[str, Any] | None = None
    async with engine.connect() as conn:
        rows = await conn.stream(q)
        async for tid, user, created, updated, tdata, idata, kind in rows:
            if record is None or record["id"] != tid:
                if record is not None:
                    yield record
                title = json.loads(tdata).get("title")
                record = {
                    "id": tid, "title": title, "created_at": _utc(created),
                    "updated_at": _utc(updated), "user": user, "items": [],
                }  # fmt: skip
            if idata is not None and (exported := message(idata, kind)) is not None:
                record["items"].append(exported)
    if record is not None:
        yield record


class Writer:
    """Records out as JSON Lines or CSV (one row per thread, its messages as JSON)."""

    __slots__ = ("_csv", "_out")

    def __init__(self, out: TextIO, fmt: str) -> None:
        self._out = out
        self._csv = csv.writer(out) if fmt == "csv" else None
        if self._csv is not None:
            self._csv.writerow(CSV_COLUMNS)

    def write(self, record: dict[str, Any]) -> None:
        if self._csv is None:
            self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        messages = record["items"]
        rated = [m["feedback"] for m in messages]
        self._csv.writerow(
            [
                record["id"], record["title"] or "", record["created_at"], record["updated_at"],
                record["user"], sum(m["role"] == "user" for m in messages),
                sum(m["role"] == "assistant" for m in messages), rated.count("positive"),
                rated.count("negative"), json.dumps(messages, ensure_ascii=False),
            ]
        )  # fmt: skip
