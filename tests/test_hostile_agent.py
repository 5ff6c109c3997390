"""Hostile input to a `chatkit_agent` route: every refusal is 4xx JSON, nothing reaches the
model or the store that should not, and no answer grows with what the client asks for."""

from __future__ import annotations

import json
from typing import Any

import pytest
from yarl import URL

from tests.conftest import ALLOWED
from tests.support.agent_client import PATH, chat, create, headers
from tests.support.fake_responses import FakeResponses

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too


async def test_oversized_and_malformed_bodies(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent()
    big = json.dumps(create("x" * 300_000))
    resp = await client.post(PATH, data=big, headers=headers())
    assert resp.status == 413
    deep = "[" * 100_000 + "]" * 100_000
    resp = await client.post(PATH, data=deep, headers=headers())
    assert resp.status == 400
    for body in ("", "null", "[]", '{"type": 7}', '{"type":"threads.create"}', "\xff"):
        resp = await client.post(PATH, data=body.encode("latin-1"), headers=headers())
        assert resp.status == 400, body
        assert (await resp.json())["error"]["code"] == "bad_request"
    assert model.requests == []


async def test_ids_and_pages_the_client_chooses(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent()
    for thread_id in ("x" * 100_000, "' OR 1=1 --", "thr_\u0000", "../../etc/passwd"):
        resp = await chat(client, {"type": "threads.get_by_id", "params": {"thread_id": thread_id}})
        assert resp.status == 404, thread_id
    page = await chat(client, {"type": "threads.list", "params": {"limit": 10**9}})
    assert page.status == 200
    many = create("hi", [f"atc_{i}" for i in range(11)])
    resp = await chat(client, many)
    assert resp.status == 400
    assert model.requests == []


async def test_paths_below_the_route(agent: Any) -> None:
    client, _ = await agent(attachments={})
    origin = {"Origin": ALLOWED}
    for path in (
        f"{PATH}/attachments/../../admin",
        f"{PATH}/attachments/atc_1/extra",
        f"{PATH}/other",
        f"{PATH}/attachments/atc_1?u=u_x&t=00",
    ):
        resp = await client.post(path, data=b"x", headers=origin)
        assert resp.status == 404, path
        assert (await resp.json())["error"]["code"] == "not_found"
    assert (await client.get(PATH, headers=origin)).status == 405


async def test_a_foreign_origin_cannot_upload(agent: Any) -> None:
    client, _ = await agent(attachments={})
    made = await (
        await chat(client, {"type": "attachments.create",
                            "params": {"name": "a.png", "size": 3, "mime_type": "image/png"}})
    ).json()  # fmt: skip
    path = URL(made["upload_descriptor"]["url"]).path_qs
    resp = await client.post(path, data=b"abc", headers={"Origin": "https://evil.example"})
    assert resp.status == 403
