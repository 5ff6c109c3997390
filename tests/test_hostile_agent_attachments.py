"""Hostile attachments on a `chatkit_agent` route (issue 20): one upload is not sent to the
model over and over, previews cost what a request costs, and stored bytes are capped per
address and per store. The storage tests run on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from yarl import URL

from gateway.agent.runtime import AGENTS
from gateway.agent.store_schema import attachments
from gateway.compiled_policy import ACTIVE_POLICY
from gateway.concurrency import SLOTS, UPLOADS
from tests.conftest import ALLOWED
from tests.support.agent_client import (
    DEVICE_A,
    DEVICE_B,
    PATH,
    chat,
    create,
    events_of,
    thread_id_of,
)
from tests.support.fake_responses import FakeResponses
from tests.support.postgres_server import PostgresServer, running_postgres
from tests.test_agent_store import attachment_create, upload

PNG = b"\x89PNG\r\n\x1a\n" + b"\x01" * 992  # 1000 bytes
MIB = 1024 * 1024
CAPS = {"max_bytes": 1024, "mime_types": ["image/png", "application/pdf"]}


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


def add_with(thread: str, text: str, ids: list[str]) -> dict[str, Any]:
    given = {"content": [{"type": "input_text", "text": text}], "attachments": ids,
             "inference_options": {}}  # fmt: skip
    return {"type": "threads.add_user_message", "params": {"thread_id": thread, "input": given}}


def inline_images(model: FakeResponses) -> list[str]:
    return [p["image_url"] for p in model.requests[-1].content_parts("input_image")]


# -- 1. one upload, amplified ------------------------------------------------------------
async def test_a_message_carries_each_attachment_once(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent(attachments=CAPS)
    image = await upload(client, "a.png", PNG, "image/png")
    resp = await chat(client, create("ten times?", [image["id"]] * 10))
    assert resp.status == 400
    assert (await resp.json())["error"]["message"] == "A message carries each attachment once"
    assert model.requests == []


async def test_history_sends_attachments_newest_first_within_the_turns_cap(
    agent: Any, model: FakeResponses
) -> None:
    client, _ = await agent(attachments={**CAPS, "max_bytes_per_turn": 1500})
    first = await upload(client, "first.png", PNG, "image/png")
    events = await events_of(await chat(client, create("one", [first["id"]])))
    thread = thread_id_of(events)
    assert len(inline_images(model)) == 1
    second_png = PNG[:-1] + b"\x02"
    second = await upload(client, "second.png", second_png, "image/png")
    await events_of(await chat(client, add_with(thread, "two", [second["id"]])))
    # 2 x 1000 bytes > 1500: the newest goes inline, the older one is named, not re-sent.
    assert inline_images(model) == [
        "data:image/png;base64," + base64.b64encode(second_png).decode()
    ]
    texts = [p["text"] for p in model.requests[-1].content_parts("input_text")]
    assert "[attachment 'first.png': not sent again in this turn]" in texts
    await events_of(await chat(client, add_with(thread, "three", [])))
    assert len(inline_images(model)) == 1  # every later turn: still one, never both


async def test_the_turn_records_the_attachment_bytes_it_sent(agent: Any) -> None:
    """The budget's estimate of an interrupted turn reads `attachment_bytes`."""
    from gateway.agent.context import TurnContext
    from gateway.agent.converter import AttachmentConverter

    client, _ = await agent(attachments={**CAPS, "max_bytes_per_turn": 1500})
    image = await upload(client, "a.png", PNG, "image/png")
    thread = thread_id_of(await events_of(await chat(client, create("see", [image["id"]]))))
    pdf = await upload(client, "b.pdf", b"%PDF" + b"x" * 896, "application/pdf")
    await events_of(await chat(client, add_with(thread, "and", [pdf["id"]])))
    app = client.server.app
    compiled = app[ACTIVE_POLICY].current.exact[PATH]
    store = await app[AGENTS].store_for(compiled.route)
    context = TurnContext(
        user=await _user_of(store, image["id"]),
        route="assistant", client="127.0.0.1", info=None,  # type: ignore[arg-type]
        attachments=compiled.route.attachments,
    )  # fmt: skip
    page = await store.load_thread_items(thread, None, 30, "asc", context)
    await AttachmentConverter(store.attachments, context).to_agent_input(page.data)
    assert context.attachment_bytes == 900  # the PDF (newest); the image would pass 1500


async def _user_of(store: Any, attachment_id: str) -> str:
    async with store.engine.connect() as conn:
        q = sa.select(attachments.c.user_id).where(attachments.c.id == attachment_id)
        return str((await conn.execute(q)).scalar())


# -- 2. previews --------------------------------------------------------------------------
async def test_previews_are_cacheable_and_spend_the_routes_limits(agent: Any) -> None:
    limits = [{"key": "client_ip", "requests": 4, "per": "1h"}]
    client, _ = await agent(attachments=CAPS, rate_limits=limits)
    image = await upload(client, "a.png", PNG, "image/png")  # create + upload: 2 of 4
    preview = URL(image["preview_url"]).path_qs
    shown = await client.get(preview)  # an <img>: no Origin, no X-Device-Id
    assert shown.status == 200
    assert await shown.read() == PNG
    assert shown.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    assert shown.headers["Content-Type"] == "image/png"
    etag = shown.headers["ETag"]
    again = await client.get(preview, headers={"If-None-Match": etag})
    assert again.status == 304
    refused = await client.get(preview)
    assert refused.status == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "RateLimit" in refused.headers


async def test_a_preview_is_read_from_the_store_in_pieces(agent: Any, store_url: str) -> None:
    big = 600 * 1024 + 7  # three pieces of 256 KiB, the last one short
    client, _ = await agent(
        store=store_url, attachments={**CAPS, "max_bytes": MIB, "max_bytes_per_turn": MIB}
    )
    data = b"\x89PNG" + bytes(range(256)) * (big // 256) + b"end"
    image = await upload(client, "big.png", data[:big], "image/png")
    shown = await client.get(URL(image["preview_url"]).path_qs)
    assert shown.status == 200
    assert shown.headers["Content-Length"] == str(big)
    assert await shown.read() == data[:big]


def _stalled_get(port: int, path: str) -> socket.socket:
    """A GET that reads the status line and then stops reading (a tiny receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    sock.settimeout(5)
    assert sock.recv(12) == b"HTTP/1.1 200"
    return sock


async def test_previews_have_a_per_client_cap_and_a_write_deadline(agent: Any) -> None:
    big = 8 * 1024 * 1024  # more than the socket buffers hold: an unread answer stalls
    client, metrics = await agent(
        attachments={**CAPS, "max_bytes": big, "max_bytes_per_turn": big},
        stream_write_timeout_seconds=1,
    )
    image = await upload(client, "big.png", b"\x89PNG" + bytes(big - 4), "image/png")
    preview = URL(image["preview_url"]).path_qs
    port = client.server.port
    assert port is not None
    loop = asyncio.get_running_loop()
    stalled = [await loop.run_in_executor(None, _stalled_get, port, preview) for _ in range(8)]
    try:
        refused = await client.get(preview)
        assert refused.status == 429
        assert (await refused.json())["error"]["message"] == "Too many previews at once"
        labels = {"route": "assistant", "key": "previews"}
        assert metrics.registry.get_sample_value("chatkit_gateway_rate_limited_total", labels)
        # The unread answers are dropped at the write deadline; their slots come back.
        for _ in range(100):
            answer = await client.get(preview)
            if answer.status == 200:
                assert len(await answer.read()) == big
                break
            await asyncio.sleep(0.1)
        assert answer.status == 200
    finally:
        for sock in stalled:
            sock.close()


def _stalled_upload(port: int, path: str) -> socket.socket:
    """An upload that sends its head and the first bytes of its body, then waits."""
    sock = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {ALLOWED}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 2000\r\n\r\n"
    )
    sock.sendall(head.encode() + b"--b\r\n")
    return sock


async def test_uploads_in_flight_per_client_are_capped_by_max_uploads_per_client(
    agent: Any,
) -> None:
    client, metrics = await agent(attachments=CAPS, max_uploads_per_client=1)
    done = await upload(client, "done.png", PNG, "image/png")
    # A probe: an upload to an attachment that has its bytes. With a slot free it is
    # refused after taking one (400); with none free, before (429). (Probes hold a slot
    # too, briefly: none is sent until the stalled upload holds its own.)
    again = URL(done["upload_descriptor"]["url"]).path_qs
    made = await (await chat(client, attachment_create("slow.png", len(PNG), "image/png"))).json()
    slow = URL(made["upload_descriptor"]["url"]).path_qs
    port = client.server.port
    assert port is not None
    loop = asyncio.get_running_loop()
    sock = await loop.run_in_executor(None, _stalled_upload, port, slow)
    slots = client.server.app[SLOTS]
    try:
        for _ in range(100):  # until the stalled upload's handler holds its slot
            if slots.full(slots.key(UPLOADS, "assistant", "127.0.0.1"), 1):
                break
            await asyncio.sleep(0.05)
        probe = await client.post(again, data=b"x", headers={"Origin": ALLOWED})
        assert probe.status == 429
        assert (await probe.json())["error"]["message"] == "Too many uploads at once"
        assert int(probe.headers["Retry-After"]) >= 1
        labels = {"route": "assistant", "key": "uploads"}
        assert metrics.registry.get_sample_value("chatkit_gateway_rate_limited_total", labels)
    finally:
        sock.close()
    for _ in range(100):  # the slot comes back when the stalled upload ends
        probe = await client.post(again, data=b"x", headers={"Origin": ALLOWED})
        if probe.status != 429:
            break
        await asyncio.sleep(0.05)
    assert probe.status == 400
    assert (await probe.json())["error"]["message"] == "This attachment was uploaded already"


# -- 4. stored bytes ----------------------------------------------------------------------
def _from(address: str, device: str = DEVICE_A) -> dict[str, str]:
    return {"Origin": ALLOWED, "Content-Type": "application/json", "X-Device-Id": device,
            "X-Forwarded-For": address}  # fmt: skip


async def _create(client: Any, address: str, device: str, size: int) -> aiohttp.ClientResponse:
    body = json.dumps(attachment_create("x.png", size, "image/png"))
    resp: aiohttp.ClientResponse = await client.post(
        PATH, data=body, headers=_from(address, device)
    )
    return resp


async def _put(client: Any, path: str, address: str) -> aiohttp.ClientResponse:
    sent: aiohttp.ClientResponse = await client.post(
        path, data=PNG, headers={"Origin": ALLOWED, "X-Forwarded-For": address}
    )
    return sent


async def test_an_address_stores_at_most_its_share(agent: Any, store_url: str) -> None:
    client, _ = await agent(
        store=store_url,
        attachments={**CAPS, "max_bytes_per_client": 2048},
        sections={"server": {"trusted_proxies": ["127.0.0.0/8", "::1/128"]}},
    )
    devices = [f"device-{i:016d}" for i in range(4)]
    for device in devices[:2]:  # invented device ids: same address, same share
        made = await (await _create(client, "203.0.113.7", device, 1000)).json()
        path = URL(made["upload_descriptor"]["url"]).path_qs
        sent = await _put(client, path, "203.0.113.7")
        assert sent.status == 200
    full = await _create(client, "203.0.113.7", devices[2], 1000)
    assert full.status == 429
    assert int(full.headers["Retry-After"]) >= 1
    # Announcing less does not help: the bytes are counted as they are stored.
    small = await (await _create(client, "203.0.113.7", devices[3], 10)).json()
    path = URL(small["upload_descriptor"]["url"]).path_qs
    sent = await _put(client, path, "203.0.113.7")
    assert sent.status == 429
    other = await _create(client, "198.51.100.9", devices[2], 1000)  # another address
    assert other.status == 200


async def test_the_store_holds_at_most_max_store_bytes(agent: Any, store_url: str) -> None:
    client, _ = await agent(
        store=store_url,
        attachments={**CAPS, "max_store_bytes": 2500},
        sections={"server": {"trusted_proxies": ["127.0.0.0/8", "::1/128"]}},
    )
    for i, address in enumerate(("203.0.113.1", "203.0.113.2")):
        made = await (await _create(client, address, f"device-{i:016d}", 1000)).json()
        path = URL(made["upload_descriptor"]["url"]).path_qs
        sent = await _put(client, path, address)
        assert sent.status == 200
    full = await _create(client, "203.0.113.3", DEVICE_B, 1000)
    assert full.status == 429
    assert (await full.json())["error"]["message"] == "The attachment store is full"
    # Threads still work: the cap keeps the disk for them.
    answer = await chat(client, create("still here?"), device=DEVICE_B)
    assert answer.status == 200
    await events_of(answer)


async def test_uploads_never_sent_are_swept_after_an_hour(
    model: FakeResponses, store_url: str
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import create_app
    from tests.support.agent_client import agent_policy

    store = {"url": store_url, "retention": None}  # threads kept forever; unsent uploads not
    policy = agent_policy(store_url, base_url=model.base_url, store=store, attachments=CAPS)
    async with TestClient(TestServer(create_app(policy))) as client:
        await _sweep_unsent(client)


async def _sweep_unsent(client: Any) -> None:
    kept = await upload(client, "sent.png", PNG, "image/png")
    await events_of(await chat(client, create("see", [kept["id"]])))
    unsent = await upload(client, "unsent.png", PNG, "image/png")
    fresh = await upload(client, "fresh.png", PNG, "image/png")
    app = client.server.app
    compiled = app[ACTIVE_POLICY].current.exact[PATH]
    store = await app[AGENTS].store_for(compiled.route)
    earlier = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=61)
    async with store.engine.begin() as conn:
        ids = [kept["id"], unsent["id"]]
        await conn.execute(
            attachments.update().where(attachments.c.id.in_(ids)).values(created_at=earlier)
        )
    await app[AGENTS].sweep_once(app[ACTIVE_POLICY].current.policy)  # the hourly sweep
    assert (await client.get(URL(unsent["preview_url"]).path_qs)).status == 404
    assert (await client.get(URL(kept["preview_url"]).path_qs)).status == 200
    assert (await client.get(URL(fresh["preview_url"]).path_qs)).status == 200
