"""A route's `max_body_bytes` caps its ChatKit JSON too: `max_json_bytes` is a smaller cap
for the endpoint, never a way around the route's own (SPEC §4, issue 20 item 10)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ALLOWED
from tests.support.agent_client import chat, create, events_of, text_of
from tests.support.chatkit_backend import Backend, running_backend
from tests.support.fake_responses import FakeResponses, Script
from tests.test_proxy import create_req, start

ORIGIN = {"Origin": ALLOWED}


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as server:
        yield server


def sized(make: Any, size: int) -> bytes:
    """A threads.create of exactly `size` bytes."""
    body = json.dumps(make("")).encode()
    body = json.dumps(make("x" * (size - len(body)))).encode()
    assert len(body) == size
    return body


async def test_a_proxy_routes_max_body_bytes_caps_its_json(gateway: Any, backend: Backend) -> None:
    client, _ = await start(gateway, backend, max_body_bytes=2048)  # max_json_bytes: 256 KiB
    body = sized(create_req, 4000)
    resp = await client.post("/chatkit", data=body, headers=ORIGIN)
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused while read
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    resp = await client.post("/chatkit", data=chunked(), headers=ORIGIN)
    assert resp.status == 413
    assert backend.seen == []  # nothing forwarded
    resp = await client.post("/chatkit", data=sized(create_req, 2000), headers=ORIGIN)
    assert resp.status == 200  # within both caps: served
    await resp.read()
    assert len(backend.seen) == 1


async def test_the_smaller_cap_applies_whichever_it_is(gateway: Any, backend: Backend) -> None:
    client, _ = await start(gateway, backend, max_body_bytes=8192, max_json_bytes=1024)
    resp = await client.post("/chatkit", data=sized(create_req, 2000), headers=ORIGIN)
    assert resp.status == 413
    assert backend.seen == []


async def test_the_openapi_document_states_the_cap_that_applies(
    gateway: Any, backend: Backend
) -> None:
    client, _ = await start(gateway, backend, max_body_bytes=2048)
    doc = await (await client.get("/openapi.json")).json()
    assert "Body at most 2048 bytes." in doc["paths"]["/chatkit"]["post"]["description"]


async def test_an_agent_routes_max_body_bytes_caps_its_json(
    agent: Any, model: FakeResponses
) -> None:
    model.script(Script(text="Small enough.", file_search=False))
    client, _ = await agent(max_body_bytes=2048)
    resp = await client.post(
        "/chatkit/assistant",
        data=sized(create, 4000),
        headers={**ORIGIN, "X-Device-Id": "device-aaaaaaaaaaaaaaaa"},
    )
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"
    assert model.requests == []  # the model was never called
    listed = await (await chat(client, {"type": "threads.list", "params": {}})).json()
    assert listed["data"] == []  # and nothing was stored
    assert text_of(await events_of(await chat(client, create("hi")))) == "Small enough."
