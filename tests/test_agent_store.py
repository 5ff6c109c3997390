"""`chatkit_agent`'s store: attachments, retention, restarts, `check` — real SQLite."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.agent.runtime import AGENTS, agent_routes
from gateway.compiled_policy import ACTIVE_POLICY
from gateway.policy import PolicyError
from tests.conftest import ALLOWED, TEST_KEY
from tests.support.agent_client import (
    DEVICE_B,
    PATH,
    agent_policy,
    chat,
    create,
    events_of,
    headers,
    thread_id_of,
)
from tests.support.fake_responses import FakeResponses
from tests.support.processes import ROOT, base_env, free_port, start_gateway

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.4\n% a tiny test file\n"
ATTACHMENTS = {"attachments": {"max_bytes": 1024, "mime_types": ["image/png", "application/pdf"]}}


def attachment_create(name: str, size: int, mime: str) -> dict[str, Any]:
    return {"type": "attachments.create", "params": {"name": name, "size": size, "mime_type": mime}}


async def upload(client: Any, name: str, data: bytes, mime: str) -> dict[str, Any]:
    made = await chat(client, attachment_create(name, len(data), mime))
    assert made.status == 200, await made.text()
    record = await made.json()
    url = URL(record["upload_descriptor"]["url"])
    assert url.path == f"{PATH}/attachments/{record['id']}"
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type=mime)
    sent = await client.post(url.path_qs, data=form, headers={"Origin": ALLOWED})
    assert sent.status == 200, await sent.text()
    done = await sent.json()
    assert "upload_descriptor" not in done
    assert isinstance(record, dict)
    return record


async def test_attachments_reach_the_model_as_input_image_and_file(
    agent: Any, model: FakeResponses
) -> None:
    client, _ = await agent(**ATTACHMENTS)
    image = await upload(client, "shot.png", PNG, "image/png")
    pdf = await upload(client, "terms.pdf", PDF, "application/pdf")
    events = await events_of(await chat(client, create("what is this?", [image["id"], pdf["id"]])))
    assert any(e["type"] == "thread.item.done" for e in events)
    request = model.requests[-1]
    (img,) = request.content_parts("input_image")
    assert img["image_url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()
    (doc,) = request.content_parts("input_file")
    assert doc["filename"] == "terms.pdf"
    assert doc["file_data"].endswith(base64.b64encode(PDF).decode())
    preview = await client.get(URL(image["preview_url"]).path_qs)  # an <img>: no headers
    assert preview.status == 200
    assert await preview.read() == PNG


async def test_attachment_caps_and_ownership(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent(**ATTACHMENTS)
    wrong_type = await chat(client, attachment_create("x.exe", 10, "application/x-msdownload"))
    assert wrong_type.status == 415
    too_big = await chat(client, attachment_create("big.png", 4096, "image/png"))
    assert too_big.status == 413
    made = await (await chat(client, attachment_create("a.png", 10, "image/png"))).json()
    url = URL(made["upload_descriptor"]["url"])
    over = await client.post(url.path_qs, data=b"x" * 2048, headers={"Origin": ALLOWED})
    assert over.status == 413
    forged = url.update_query(t="0" * 32)
    assert (await client.post(forged.path_qs, data=PNG, headers={"Origin": ALLOWED})).status == 404
    # Device B can neither send A's attachment nor read it.
    stolen = await chat(client, create("mine?", [made["id"]]), device=DEVICE_B)
    assert stolen.status == 404
    delete = {"type": "attachments.delete", "params": {"attachment_id": made["id"]}}
    other = await chat(client, delete, device=DEVICE_B)
    assert other.status == 200  # deleting what B does not own deletes nothing
    uploaded = await client.post(url.path_qs, data=PNG, headers={"Origin": ALLOWED})
    assert uploaded.status == 200
    assert model.requests == []


async def test_a_route_without_attachments_refuses_them(agent: Any) -> None:
    client, _ = await agent()
    resp = await chat(client, attachment_create("a.png", 10, "image/png"))
    assert resp.status == 400


async def test_deleting_a_thread_deletes_its_attachments(agent: Any) -> None:
    client, _ = await agent(**ATTACHMENTS)
    image = await upload(client, "shot.png", PNG, "image/png")
    thread = thread_id_of(await events_of(await chat(client, create("see", [image["id"]]))))
    gone = await chat(client, {"type": "threads.delete", "params": {"thread_id": thread}})
    assert gone.status == 200
    assert (await client.get(URL(image["preview_url"]).path_qs)).status == 404
    read = await chat(client, {"type": "threads.get_by_id", "params": {"thread_id": thread}})
    assert read.status == 404


async def test_the_retention_sweep_deletes_untouched_threads(agent: Any) -> None:
    client, _ = await agent()
    thread = thread_id_of(await events_of(await chat(client, create("old news"))))
    app = client.server.app
    (route,) = agent_routes(app[ACTIVE_POLICY].current.policy)
    store = await app[AGENTS].store_for(route)
    assert await store.sweep(3600) == 0  # touched just now: kept
    assert await store.sweep(1e-6) == 1
    read = await chat(client, {"type": "threads.get_by_id", "params": {"thread_id": thread}})
    assert read.status == 404


def test_check_names_the_missing_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "agents" else real(name, *a)
    )
    with pytest.raises(PolicyError) as refused:
        agent_policy(f"sqlite:///{tmp_path / 't.db'}")
    assert "pip install 'chatkit-gateway[agent]'" in str(refused.value)
    assert "missing: agents" in str(refused.value)


def test_check_masks_the_store_password(tmp_path: Path) -> None:
    from tests.conftest import policy_yaml
    from tests.support.agent_client import agent_route

    secret = "pg-Secret-Pw-42"
    route = agent_route(f"postgresql://gateway:{secret}@127.0.0.1:5999/threads")
    config = tmp_path / "gateway.yaml"
    config.write_text(policy_yaml(routes=[route]))
    done = subprocess.run(
        [str(Path(sys.executable).parent / "chatkit-gateway"), "check", "--config", str(config)],
        capture_output=True, text=True, env=base_env(OPENAI_API_KEY=TEST_KEY), cwd=ROOT,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    assert "postgresql://gateway:***@127.0.0.1:5999/threads" in done.stdout


async def test_threads_survive_a_restart(tmp_path: Path, gateways: list[Any]) -> None:
    from tests.support.agent_client import agent_route
    from tests.support.processes import write_policy

    port = free_port()
    config = write_policy(
        tmp_path / "gw.yaml", port=port, routes=[agent_route(f"sqlite:///{tmp_path / 't.db'}")]
    )
    env = base_env(OPENAI_API_KEY=TEST_KEY)
    first = await start_gateway(config, port, "--stub-upstream", env=env, gateways=gateways)
    async with aiohttp.ClientSession(base_url=first.url) as http:
        resp = await http.post(PATH, data=json.dumps(create("remember me")), headers=headers())
        thread = thread_id_of(await events_of(resp))
    first.proc.terminate()
    assert await first.wait_exit(15) == 0
    second = await start_gateway(config, port, "--stub-upstream", env=env, gateways=gateways)
    async with aiohttp.ClientSession(base_url=second.url) as http:
        body = {"type": "threads.get_by_id", "params": {"thread_id": thread}}
        resp = await http.post(PATH, data=json.dumps(body), headers=headers())
        assert resp.status == 200
        items = json.dumps((await resp.json())["items"]["data"])
    assert "remember me" in items
    assert "stub model" in items  # the answer was kept as well


async def test_the_servers_process_is_the_sdks_with_its_parser_built_once(agent: Any) -> None:
    """AgentServer.process keeps one TypeAdapter instead of the SDK's one per request
    (docs/BENCHMARKS.md); what it answers must be what the SDK's own `process` answers."""
    from chatkit.server import ChatKitServer, NonStreamingResult, StreamingResult
    from pydantic import ValidationError

    from gateway.agent.context import TurnContext
    from gateway.agent.serving import AgentHandler

    client, _ = await agent()
    thread = thread_id_of(await events_of(await chat(client, create("compare me"))))
    app = client.server.app
    compiled = app[ACTIVE_POLICY].current.exact[PATH]
    runtime = app[AGENTS]
    store = await runtime.store_for(compiled.route)
    policy = app[ACTIVE_POLICY].current.policy
    handler = compiled.handler
    assert isinstance(handler, AgentHandler)
    server = runtime.server_for(handler.route, handler.data, store, policy.upstream)
    owner = await _owner_of(thread, store)
    assert owner.startswith("u_")  # the keyed hash of the device id, never the id
    context = TurnContext(user=owner, route="assistant", client="127.0.0.1", info=None)  # type: ignore[arg-type]
    for body in (
        {"type": "threads.list", "params": {}},
        {"type": "threads.get_by_id", "params": {"thread_id": thread}},
        {"type": "items.list", "params": {"thread_id": thread, "order": "asc"}},
    ):
        raw = json.dumps(body).encode()
        ours = await server.process(raw, context)
        sdks = await ChatKitServer.process(server, raw, context)
        assert isinstance(ours, NonStreamingResult) and isinstance(sdks, NonStreamingResult)
        assert ours.json == sdks.json
    streaming = json.dumps(create("x")).encode()
    assert isinstance(await server.process(streaming, context), StreamingResult)
    assert isinstance(await ChatKitServer.process(server, streaming, context), StreamingResult)
    for bad in (b"{}", b'{"type": "threads.create", "params": {"input": 3}}', b"[1]"):
        with pytest.raises(ValidationError):
            await server.process(bad, context)
        with pytest.raises(ValidationError):
            await ChatKitServer.process(server, bad, context)


async def _owner_of(thread: str, store: Any) -> str:
    import sqlalchemy as sa

    from gateway.agent.store_schema import threads

    async with store.engine.connect() as conn:
        found = await conn.execute(sa.select(threads.c.user_id).where(threads.c.id == thread))
        return str(found.scalar())
