"""The thread store's migrations: a database written by the previous schema, with data in
it, is brought up to date at start and keeps every thread, item and attachment, on SQLite
and on a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from yarl import URL

from gateway.agent.store_migrations import SCHEMA_VERSION
from gateway.agent.store_schema import open_engine
from tests.support.agent_client import add, chat, events_of
from tests.support.postgres_server import PostgresServer, running_postgres
from tests.test_agent_store import attachment_create

PNG = b"\x89PNG\r\n\x1a\n" + b"\x07" * 992  # 1000 bytes

# Version 1's tables, as the gateway of that version created them.
V1 = sa.MetaData()
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
V1_THREADS = sa.Table(
    "ckgw_threads", V1,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("updated_at", sa.DateTime(), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Index("ckgw_threads_user", "user_id", "created_at"),
    sa.Index("ckgw_threads_updated", "updated_at"),
)  # fmt: skip
V1_ITEMS = sa.Table(
    "ckgw_items", V1,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False),
    sa.Column("thread_id", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.UniqueConstraint("thread_id", "id", name="ckgw_items_thread_item"),
)  # fmt: skip
V1_ATTACHMENTS = sa.Table(
    "ckgw_attachments", V1,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("thread_id", sa.String(128), nullable=True),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("data", sa.Text(), nullable=False),
    sa.Column("content", sa.LargeBinary(), nullable=True),
    sa.Index("ckgw_attachments_user", "user_id"),
    sa.Index("ckgw_attachments_thread", "thread_id"),
)  # fmt: skip
V1_SCHEMA = sa.Table(
    "ckgw_schema", V1,
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("applied_at", sa.DateTime(), nullable=False),
)  # fmt: skip


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'threads.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


async def _user_of(client: Any) -> str:
    """The store's user for DEVICE_A, as this gateway hashes it (from a row it writes)."""
    made = await chat(client, attachment_create("probe.png", 10, "image/png"))
    record = await made.json()
    return str(URL(record["upload_descriptor"]["url"]).query["u"])


async def _write_v1(url: str, user: str) -> dict[str, str]:
    """A version-1 database with one thread, its message carrying an uploaded image."""
    from chatkit.types import (
        ImageAttachment,
        InferenceOptions,
        ThreadMetadata,
        UserMessageItem,
        UserMessageTextContent,
    )

    now = dt.datetime(2026, 11, 1, 12, 0)
    image = ImageAttachment(
        id="atc_old", name="old.png", mime_type="image/png", thread_id="thr_old",
        preview_url="http://127.0.0.1/old.png",  # type: ignore[arg-type]
    )  # fmt: skip
    thread = ThreadMetadata(id="thr_old", title="from v1", created_at=now).model_dump_json()
    attachment = image.model_dump_json()
    item = UserMessageItem(
        id="msg_old", thread_id="thr_old", created_at=now, attachments=[image],
        content=[UserMessageTextContent(text="written by v1")],
        inference_options=InferenceOptions(),
    ).model_dump_json()  # fmt: skip
    engine = open_engine(url, timeout=5, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(V1.create_all)
            await conn.execute(V1_SCHEMA.insert().values(version=1, applied_at=now))
            await conn.execute(V1_THREADS.insert().values(
                id="thr_old", user_id=user, created_at=now, updated_at=dt.datetime.now(),
                data=thread))  # fmt: skip
            await conn.execute(V1_ITEMS.insert().values(
                id="msg_old", thread_id="thr_old", user_id=user, data=item))  # fmt: skip
            await conn.execute(V1_ATTACHMENTS.insert().values(
                id="atc_old", user_id=user, thread_id="thr_old", created_at=now,
                data=attachment, content=PNG))  # fmt: skip
    finally:
        await engine.dispose()
    return {"thread": "thr_old", "attachment": "atc_old"}


async def test_a_version_1_store_is_migrated_with_its_data(
    agent: Any, model: Any, store_url: str, tmp_path: Any
) -> None:
    probe, _ = await agent(store=f"sqlite:///{tmp_path / 'probe.db'}", attachments={})
    user = await _user_of(probe)
    old = await _write_v1(store_url, user)
    client, _ = await agent(
        store=store_url, attachments={"max_bytes": 1024, "max_store_bytes": 1500}
    )
    read = {"type": "threads.get_by_id", "params": {"thread_id": old["thread"]}}
    resp = await chat(client, read)
    assert resp.status == 200
    assert "written by v1" in json.dumps(await resp.json())
    # The old message's image still reaches the model, from the migrated row.
    await events_of(await chat(client, add(old["thread"], "and now?")))
    (image,) = model.requests[-1].content_parts("input_image")
    assert image["image_url"].startswith("data:image/png;base64,")
    # Its bytes were counted by the migration: the store cap (1500) leaves no room for 1000.
    full = await chat(client, attachment_create("new.png", 1000, "image/png"))
    assert full.status == 429
    engine = open_engine(store_url, timeout=5, pool_size=1)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(sa.text("SELECT version FROM ckgw_schema"))).scalars()
            assert sorted(versions) == list(range(1, SCHEMA_VERSION + 1))
            size = sa.text("SELECT size FROM ckgw_attachments WHERE id = 'atc_old'")
            assert (await conn.execute(size)).scalar() == len(PNG)
    finally:
        await engine.dispose()
    # A second start finds it current: nothing runs twice.
    again, _ = await agent(store=store_url, attachments={})
    assert (await chat(again, read)).status == 200
