"""`chatkit_agent` over HTTP, as the widget speaks it: the real openai-chatkit and Agents
SDKs inside the gateway, a real SQLite store, and the fake Responses API as the model."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import TEST_KEY
from tests.support.agent_client import (  # noqa: F401  (agent, model: fixtures)
    DEVICE_A,
    DEVICE_B,
    PATH,
    add,
    agent_policy,
    chat,
    create,
    events_of,
    headers,
    sample,
    sqlite_url,
    sse_events,
    text_of,
    thread_id_of,
)
from tests.support.fake_responses import FakeResponses, FileCitation, FileSearch, Script, SearchHit

pytestmark = pytest.mark.lowest  # scripts/dependency-bounds.sh runs these too

Client = TestClient[web.Request, web.Application]


async def test_an_answer_streams_as_the_model_produces_it(agent: Any, model: FakeResponses) -> None:
    model.script(Script(text="one two three four", hang_after=2, file_search=False))
    client, metrics = await agent()
    resp = await chat(client, create("hello"))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    assert resp.headers["X-Accel-Buffering"] == "no"
    deltas: list[str] = []
    async for event in sse_events(resp):
        if event["type"] == "thread.item.updated" and "delta" in event["update"]:
            deltas.append(event["update"]["delta"])
        if len(deltas) == 2:
            break  # the model is still "thinking": what we have came before it finished
    assert "".join(deltas) == "one two"
    assert sample(metrics, "chatkit_gateway_open_streams", route="assistant") == 1
    resp.close()  # the visitor leaves
    await asyncio.wait_for(model.disconnected.wait(), 5)  # and the model call is cancelled
    for _ in range(50):
        if sample(metrics, "chatkit_gateway_open_streams", route="assistant") == 0:
            break
        await asyncio.sleep(0.05)
    assert sample(metrics, "chatkit_gateway_open_streams", route="assistant") == 0
    assert (
        sample(
            metrics,
            "chatkit_gateway_upstream_requests_total",
            route="assistant",
            outcome="cancelled",
        )
        == 1
    )


async def test_the_model_gets_the_policy_agent_and_the_thread_history(
    agent: Any, model: FakeResponses
) -> None:
    model.script(Script(text="First answer.", input_tokens=11, output_tokens=3))
    model.script(Script(text="Second answer.", input_tokens=20, output_tokens=4))
    client, metrics = await agent(
        agent={
            "model": "gpt-6.1-terra",
            "instructions": "Cite example.org.",
            "tools": [
                {"type": "file_search", "vector_store_ids": ["vs_abc123"], "max_num_results": 8},
                {"type": "web_search", "allowed_domains": ["example.org"]},
            ],
            "model_settings": {
                "temperature": 0.2, "max_output_tokens": 1200, "reasoning_effort": "low",
            },
            "history_items": 30,
        },
    )  # fmt: skip
    first = await events_of(await chat(client, create("What are the hours?")))
    assert text_of(first) == "First answer."
    thread = thread_id_of(first)
    second = await events_of(await chat(client, add(thread, "And on Sundays?")))
    assert text_of(second) == "Second answer."
    request = model.requests[-1]
    assert request.api_key == TEST_KEY
    assert request.model == "gpt-6.1-terra"
    assert request.instructions == "Cite example.org."
    tools = {t["type"]: t for t in request.tools}
    assert tools["file_search"]["vector_store_ids"] == ["vs_abc123"]
    assert tools["file_search"]["max_num_results"] == 8
    assert "example.org" in json.dumps(tools["web_search"])
    body = request.body
    assert body["temperature"] == 0.2
    assert body["max_output_tokens"] == 1200
    assert body["reasoning"]["effort"] == "low"
    assert body["stream"] is True
    history = json.dumps(request.input_items)
    for said in ("What are the hours?", "First answer.", "And on Sundays?"):
        assert said in history
    tokens = "chatkit_gateway_model_tokens_total"
    assert sample(metrics, tokens, route="assistant", direction="input") == 31
    assert sample(metrics, tokens, route="assistant", direction="output") == 7
    assert sample(
        metrics, "chatkit_gateway_chatkit_requests_total", route="assistant",
        type="threads.add_user_message",
    ) == 1  # fmt: skip


async def test_history_items_bounds_what_each_turn_sends(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent(
        agent={"model": "gpt-6.1-terra", "instructions": "x", "history_items": 2}
    )
    thread = thread_id_of(await events_of(await chat(client, create("question one"))))
    await events_of(await chat(client, add(thread, "question two")))
    sent = json.dumps(model.requests[-1].input_items)
    assert "question two" in sent and "question one" not in sent


async def test_hosted_search_sends_progress_and_citations_become_sources(
    agent: Any, model: FakeResponses
) -> None:
    hit = SearchHit(file_id="file-1", filename="opening-hours.md", text="Nine to five.")
    model.script(
        Script(
            text="We open at nine.",
            file_search=FileSearch(results=(hit,), delay=0.3),
            citations=[FileCitation(file_id="file-1", filename="opening-hours.md")],
        )
    )
    client, _ = await agent()
    events = await events_of(await chat(client, create("When do you open?")))
    kinds = [e["type"] for e in events]
    progress = kinds.index("progress_update")
    first_text = next(
        i for i, e in enumerate(events)
        if e["type"] == "thread.item.updated" and "delta" in e["update"]
    )  # fmt: skip
    assert progress < first_text
    assert "Searching" in events[progress]["text"]
    added = [
        e["update"]["annotation"] for e in events
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.annotation_added"
    ]  # fmt: skip
    assert [a["source"]["filename"] for a in added] == ["opening-hours.md"]
    done = [e for e in events if e["type"] == "thread.item.done"]
    answer = done[-1]["item"]
    assert answer["type"] == "assistant_message"
    assert answer["content"][0]["annotations"][0]["source"]["filename"] == "opening-hours.md"


async def test_devices_never_see_each_others_threads(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent()
    thread = thread_id_of(await events_of(await chat(client, create("my secret question"))))
    answers = len(model.requests)

    listed = await chat(client, {"type": "threads.list", "params": {}}, device=DEVICE_B)
    assert listed.status == 200
    assert (await listed.json())["data"] == []
    foreign = [
        {"type": "threads.get_by_id", "params": {"thread_id": thread}},
        {"type": "items.list", "params": {"thread_id": thread}},
        {"type": "threads.update", "params": {"thread_id": thread, "title": "mine now"}},
        {"type": "threads.delete", "params": {"thread_id": thread}},
        add(thread, "continue it"),
    ]
    for body in foreign:
        resp = await chat(client, body, device=DEVICE_B)
        assert resp.status == 404, body["type"]
        assert await resp.json() == {"error": {"code": "not_found", "message": "Not found"}}
    unknown = await chat(client, {"type": "threads.get_by_id", "params": {"thread_id": "thr_x"}})
    assert await unknown.json() == {"error": {"code": "not_found", "message": "Not found"}}
    assert len(model.requests) == answers  # nothing of B's reached the model

    mine = await chat(client, {"type": "threads.get_by_id", "params": {"thread_id": thread}})
    body = await mine.json()
    assert body["id"] == thread and body.get("title") != "mine now"
    texts = json.dumps(body["items"]["data"])
    assert "my secret question" in texts


async def test_no_device_id_is_400_and_nothing_is_spent(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent()
    for device in (None, "short", "x" * 129, "bad id with spaces!!"):
        resp = await chat(client, create("hi"), device=device)
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["code"] == "bad_request"
        assert "X-Device-Id" in body["error"]["message"]
    assert model.requests == []


async def test_a_foreign_origin_never_reaches_the_model(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent()
    resp = await client.post(
        PATH, data=json.dumps(create("hi")), headers=headers(origin="https://evil.example")
    )
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "origin_not_allowed"
    preflight = await client.options(
        PATH,
        headers={
            "Origin": "https://example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-device-id",
        },
    )
    assert preflight.status == 204
    assert "X-Device-Id" in preflight.headers["Access-Control-Allow-Headers"]
    assert model.requests == []


async def test_token_budgets_refuse_before_the_model_is_called(
    agent: Any, model: FakeResponses
) -> None:
    model.default = Script(text="ok", input_tokens=60, output_tokens=10)
    client, metrics = await agent(token_budgets=[{"key": "user", "tokens": 50, "per": "1d"}])
    first = await chat(client, create("one"))
    assert first.status == 200
    assert text_of(await events_of(first)) == "ok"  # overshoots by its own size, once
    second = await chat(client, create("two"))
    assert second.status == 429
    assert (await second.json())["error"]["code"] == "rate_limited"
    assert int(second.headers["Retry-After"]) > 3600  # 70 tokens of 50 per day: over a day's share
    assert len(model.requests) == 1
    other = await chat(client, create("three"), device=DEVICE_B)  # a budget per user
    assert other.status == 200
    await events_of(other)
    assert (
        sample(metrics, "chatkit_gateway_rate_limited_total", route="assistant", key="tokens") == 1
    )
    reads = await chat(client, {"type": "threads.list", "params": {}})
    assert reads.status == 200  # reading threads costs no tokens


async def test_a_global_budget_is_shared_by_everyone(agent: Any, model: FakeResponses) -> None:
    model.default = Script(text="ok", input_tokens=30, output_tokens=30)
    client, _ = await agent(token_budgets=[{"key": "global", "tokens": 50, "per": "1h"}])
    await events_of(await chat(client, create("one")))
    refused = await chat(client, create("two"), device=DEVICE_B)
    assert refused.status == 429


async def test_types_limits_and_the_stream_cap(agent: Any, model: FakeResponses) -> None:
    client, metrics = await agent(
        rate_limits=[{"key": "client_ip", "requests": 2, "per": "1h", "types": ["threads.create"]}],
        max_streams_per_client=1,
    )
    model.script(Script(text="slow answer here", hang_after=1))
    held = await chat(client, create("one"))
    async for event in sse_events(held):
        if event["type"] == "thread.item.updated":
            break  # the stream is open and answering
    capped = await chat(client, create("two"))
    assert capped.status == 429
    assert capped.headers["Retry-After"] == "5"
    held.close()
    await asyncio.wait_for(model.disconnected.wait(), 5)
    for _ in range(50):
        resp = await chat(client, {"type": "threads.list", "params": {}})
        assert resp.status == 200  # untyped requests are not counted by the types limit
        if sample(metrics, "chatkit_gateway_open_streams", route="assistant") == 0:
            break
        await asyncio.sleep(0.05)
    third = await chat(client, create("three"))  # the 2nd create is the capped one's
    assert third.status == 200
    await events_of(third)
    fourth = await chat(client, create("four"))
    assert fourth.status == 429
    assert "RateLimit" in fourth.headers


@pytest.mark.parametrize(
    ("script", "retry"),
    [
        (
            Script(status=401, fail_times=None, error_message="Incorrect API key sk-leak-1234"),
            False,
        ),
        (Script(status=500, fail_times=None, error_message="trace: internal db at 10.0.0.7"), True),
        (Script(text="partial answer that dies", die_after=2), True),
    ],
    ids=["auth", "server-error", "dies-mid-answer"],
)
async def test_model_failures_end_the_stream_with_a_generic_error_event(
    agent: Any, model: FakeResponses, script: Script, retry: bool, json_logs: Any
) -> None:
    model.default = script
    client, _ = await agent()
    resp = await chat(client, create("hi"))
    assert resp.status == 200  # the stream had begun: the SDK reports it in the stream
    raw = await resp.text()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["allow_retry"] is retry
    for leak in (TEST_KEY, "sk-leak", "10.0.0.7", "Traceback", "trace:"):
        assert leak not in raw
    logged = "\n".join(json_logs.lines)
    assert TEST_KEY not in logged


async def test_the_stub_model_streams_progress_and_a_citation(
    agent: Any, model: FakeResponses
) -> None:
    client, _ = await agent(stub=True)
    events = await events_of(await chat(client, create("where is the guide")))
    assert "where is the guide" in text_of(events)
    assert any(e["type"] == "progress_update" for e in events)
    done = [e["item"] for e in events if e["type"] == "thread.item.done"]
    assert done[-1]["content"][0]["annotations"][0]["source"]["filename"] == "stub-guide.md"
    assert model.requests == []  # offline: the stub never calls out


async def test_requests_the_route_does_not_serve_are_400(agent: Any, model: FakeResponses) -> None:
    client, _ = await agent()
    for kind in ("input.transcribe", "threads.custom_action", "threads.add_client_tool_output"):
        resp = await chat(client, {"type": kind, "params": {}})
        assert resp.status == 400, kind
    broken = await chat(client, {"type": "threads.create", "params": {"input": 3}})
    assert broken.status == 400
    assert (await broken.json())["error"]["message"] == "Not a valid ChatKit request"
    odd_types: list[object] = [[], {"a": 1}, 3, None]  # not types at all (a list made a 500)
    for odd in odd_types:
        resp = await chat(client, {"type": odd, "params": {}})
        assert resp.status == 400, odd
        assert "does not serve ChatKit requests of type" in (await resp.json())["error"]["message"]


async def test_instructions_from_a_file_reach_the_model(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    prompt = tmp_path / "assistant.md"
    prompt.write_text("You answer from the handbook.\n")
    client, _ = await agent(agent={"model": "gpt-6.1-terra", "instructions_file": str(prompt)})
    await events_of(await chat(client, create("hi")))
    assert model.requests[-1].instructions == "You answer from the handbook.\n"


def test_agent_policy_mistakes_are_named_with_their_line(tmp_path: Path) -> None:
    from gateway.policy import PolicyError

    cases = [
        ({"model": "m", "instructions": "a", "instructions_file": str(tmp_path / "x")},
         "instructions_file"),
        ({"model": "m", "instructions_file": str(tmp_path / "missing.md")}, "cannot read"),
        ({"model": "m", "tools": [{"type": "file_search", "vector_store_ids": []}]},
         "vector_store_ids"),
        ({"model": "m", "model_settings": {"reasoning_effort": "max"}}, "expected one of"),
    ]  # fmt: skip
    (tmp_path / "x").write_text("x")
    for given, needle in cases:
        with pytest.raises(PolicyError) as refused:
            agent_policy(f"sqlite:///{tmp_path / 't.db'}", agent=given)
        assert needle in str(refused.value), (given, str(refused.value))
    with pytest.raises(PolicyError) as refused:
        agent_policy("mysql://u:p@h/db")
    assert "expected sqlite:///" in str(refused.value)
    assert ":p@" not in str(refused.value)


async def test_a_failed_model_call_is_retried_as_upstream_retries_says(
    agent: Any, model: FakeResponses
) -> None:
    model.script(Script(text="second try", status=503, fail_times=1, retry_after=0.01))
    client, metrics = await agent()
    events = await events_of(await chat(client, create("hi")))
    assert text_of(events) == "second try"
    assert [r.outcome for r in model.requests] == ["http_503", "completed"]
    assert (
        sample(metrics, "chatkit_gateway_upstream_requests_total", route="assistant", outcome="ok")
        == 1
    )


async def test_a_reload_changes_the_agent_and_keeps_the_threads(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    from gateway.reload import apply_policy

    client, _ = await agent()
    thread = thread_id_of(await events_of(await chat(client, create("before the reload"))))
    newer = agent_policy(
        f"sqlite:///{tmp_path / 'threads.db'}", base_url=model.base_url,
        agent={"model": "gpt-6.1", "instructions": "Newer instructions."},
    )  # fmt: skip
    assert apply_policy(client.server.app, newer) == ["route assistant changed"]
    await events_of(await chat(client, add(thread, "after the reload")))
    request = model.requests[-1]
    assert (request.model, request.instructions) == ("gpt-6.1", "Newer instructions.")
    assert "before the reload" in json.dumps(request.input_items)


async def test_a_visitor_who_leaves_mid_answer_is_still_charged(
    agent: Any, model: FakeResponses
) -> None:
    model.script(Script(text="a long answer never finished", hang_after=1))
    model.default = Script(text="ok", input_tokens=1, output_tokens=1)
    client, metrics = await agent(token_budgets=[{"key": "user", "tokens": 20, "per": "1d"}])
    held = await chat(client, create("question " * 20))
    async for event in sse_events(held):
        if event["type"] == "thread.item.updated":
            break
    held.close()  # no usage will come: the turn is charged its estimated input
    await asyncio.wait_for(model.disconnected.wait(), 5)
    for _ in range(100):
        if sample(metrics, "chatkit_gateway_open_streams", route="assistant") == 0:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)  # the charge follows the stream's close in the same cleanup
    again = await chat(client, create("again"))
    assert again.status == 429
