"""The widget's thumbs (`items.feedback`, SPEC §10): kept with item, user and time, only for
the caller's own items, replaced by a later rating, counted, and gone with their thread —
over HTTP with the real SDKs, on SQLite and a real PostgreSQL; and the schema step that
adds them, from a version-2 store with data in it."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.agent.context import TurnContext
from gateway.agent.store import SqlStore, migrate
from gateway.agent.store_migrations import SCHEMA_VERSION
from gateway.agent.store_schema import attachments, feedback, items, meta, open_engine, schema
from gateway.agent.store_schema import threads as threads_table
from tests.support.agent_client import (
    DEVICE_A,
    DEVICE_B,
    chat,
    create,
    events_of,
    sample,
    thread_id_of,
)
from tests.support.fake_responses import FakeResponses, Script
from tests.support.postgres_server import PostgresServer, running_postgres

FEEDBACK = "chatkit_gateway_feedback_total"


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


def rate(thread_id: str, item_ids: list[str], kind: str) -> dict[str, Any]:
    params = {"thread_id": thread_id, "item_ids": item_ids, "kind": kind}
    return {"type": "items.feedback", "params": params}


def answer_id(events: list[dict[str, Any]]) -> str:
    (done,) = [
        e["item"]
        for e in events
        if e["type"] == "thread.item.done" and e["item"]["type"] == "assistant_message"
    ]
    return str(done["id"])


async def rows(url: str) -> list[tuple[str, str, str, str]]:
    engine = open_engine(url, timeout=5, pool_size=1)
    try:
        async with engine.connect() as conn:
            q = sa.select(
                feedback.c.thread_id, feedback.c.item_id, feedback.c.user_id, feedback.c.kind
            )
            found = await conn.execute(q.order_by(feedback.c.item_id))
            return [(r[0], r[1], r[2], r[3]) for r in found]
    finally:
        await engine.dispose()


async def test_feedback_is_the_callers_own_replaced_counted_and_deleted_with_the_thread(
    agent: Any, model: FakeResponses, store_url: str
) -> None:
    model.default = Script(text="Nine to five.", file_search=False)
    client, metrics = await agent(store=store_url)
    mine = await events_of(await chat(client, create("Opening hours?")))
    thread, item = thread_id_of(mine), answer_id(mine)
    theirs = await events_of(await chat(client, create("Prices?"), device=DEVICE_B))
    their_thread = thread_id_of(theirs)

    # Another device: its own thread with A's item, or A's thread, is an unknown id.
    unknown = await chat(client, rate("thr_00000000", [item], "negative"), device=DEVICE_B)
    assert unknown.status == 404
    expected = await unknown.json()
    for body in (rate(thread, [item], "negative"), rate(their_thread, [item], "negative")):
        refused = await chat(client, body, device=DEVICE_B)
        assert refused.status == 404
        assert await refused.json() == expected
    # An item that is not in the caller's thread: the same, and nothing of the request kept.
    half = await chat(client, rate(thread, [item, "msg_nowhere"], "positive"), device=DEVICE_A)
    assert half.status == 404
    assert await rows(store_url) == []
    assert sample(metrics, FEEDBACK, route="assistant", kind="negative") == 0

    ok = await chat(client, rate(thread, [item], "positive"), device=DEVICE_A)
    assert ok.status == 200
    assert await ok.json() == {}
    ((t, i, user, kind),) = await rows(store_url)
    assert (t, i, kind) == (thread, item, "positive")
    assert DEVICE_A not in user and len(user) >= 16  # the keyed hash, never the device id
    assert sample(metrics, FEEDBACK, route="assistant", kind="positive") == 1

    again = await chat(client, rate(thread, [item], "negative"), device=DEVICE_A)
    assert again.status == 200
    assert [(r[1], r[3]) for r in await rows(store_url)] == [(item, "negative")]  # replaced
    assert sample(metrics, FEEDBACK, route="assistant", kind="negative") == 1

    gone = await chat(client, {"type": "threads.delete", "params": {"thread_id": thread}})
    assert gone.status == 200
    assert await rows(store_url) == []


async def test_the_retention_sweep_takes_feedback_with_old_threads(store_url: str) -> None:
    from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata

    engine = open_engine(store_url, timeout=5, pool_size=1)
    await migrate(engine)
    store = SqlStore(engine, timeout=5, on_error=lambda _: None)
    context = TurnContext(user="u" * 32, route="assistant", client="c", info=None)  # type: ignore[arg-type]
    now = dt.datetime.now()
    try:
        for name in ("thr_old", "thr_new"):
            await store.save_thread(ThreadMetadata(id=name, created_at=now), context)
            answer = AssistantMessageItem(
                id=f"msg_{name}", thread_id=name, created_at=now,
                content=[AssistantMessageContent(text="hi")],
            )  # fmt: skip
            await store.add_thread_item(name, answer, context)
            assert await store.save_feedback(name, [f"msg_{name}"], "negative", context) == 1
        async with engine.begin() as conn:
            old = now - dt.timedelta(days=40)
            await conn.execute(
                threads_table.update().where(threads_table.c.id == "thr_old").values(updated_at=old)
            )
        assert await store.sweep(30 * 86400.0) == 1
        assert [r[0] for r in await rows(store_url)] == ["thr_new"]
    finally:
        await engine.dispose()


async def test_a_version_2_store_with_data_gains_feedback(store_url: str) -> None:
    """The store a gateway of schema version 2 wrote: migrated at start, everything kept,
    and its old items can be rated."""
    from chatkit.types import AssistantMessageContent, AssistantMessageItem, ThreadMetadata

    assert SCHEMA_VERSION == 3
    user = "h" * 32
    now = dt.datetime(2026, 11, 20, 9, 0)
    answer = AssistantMessageItem(
        id="msg_v2", thread_id="thr_v2", created_at=now,
        content=[AssistantMessageContent(text="written by v2")],
    )  # fmt: skip
    engine = open_engine(store_url, timeout=5, pool_size=1)
    try:
        async with engine.begin() as conn:  # version 2: every table but feedback
            v2 = [threads_table, items, attachments, schema]
            await conn.run_sync(lambda c: meta.create_all(c, tables=v2))
            await conn.execute(schema.insert().values(version=1, applied_at=now))
            await conn.execute(schema.insert().values(version=2, applied_at=now))
            thread = ThreadMetadata(id="thr_v2", title="v2", created_at=now).model_dump_json()
            await conn.execute(threads_table.insert().values(
                id="thr_v2", user_id=user, created_at=now, updated_at=dt.datetime.now(),
                data=thread))  # fmt: skip
            data = answer.model_dump_json()
            await conn.execute(items.insert().values(
                id="msg_v2", thread_id="thr_v2", user_id=user, data=data))  # fmt: skip
        async with engine.connect() as conn:
            assert not await conn.run_sync(lambda c: sa.inspect(c).has_table("ckgw_feedback"))

        await migrate(engine)
        await migrate(engine)  # a second start (or replica) finds nothing to do

        store = SqlStore(engine, timeout=5, on_error=lambda _: None)
        context = TurnContext(user=user, route="assistant", client="c", info=None)  # type: ignore[arg-type]
        assert (await store.load_thread("thr_v2", context)).title == "v2"
        (kept,) = (await store.load_thread_items("thr_v2", None, 10, "asc", context)).data
        assert json.loads(kept.model_dump_json())["content"][0]["text"] == "written by v2"
        assert await store.save_feedback("thr_v2", ["msg_v2"], "positive", context) == 1
        async with engine.connect() as conn:
            versions = (await conn.execute(sa.select(schema.c.version))).scalars().all()
        assert sorted(versions) == [1, 2, 3]
    finally:
        await engine.dispose()
    assert await rows(store_url) == [("thr_v2", "msg_v2", user, "positive")]
