"""Thread titles (SPEC §10): after a thread's first answer, one short model call names it, and
the widget gets `thread.updated` — over HTTP with the real SDKs and the fake Responses API
(which answers title calls from their own queue), and offline with the stub."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.agent import titles
from tests.support.agent_client import add, chat, create, events_of, sample, text_of, thread_id_of
from tests.support.fake_responses import FakeResponses, Script

TOKENS = "chatkit_gateway_model_tokens_total"


def updated_titles(events: list[dict[str, Any]]) -> list[str | None]:
    return [e["thread"].get("title") for e in events if e["type"] == "thread.updated"]


async def listed(client: Any) -> dict[str, str | None]:
    resp = await chat(client, {"type": "threads.list", "params": {}})
    assert resp.status == 200
    return {t["id"]: t.get("title") for t in (await resp.json())["data"]}


async def test_the_first_answer_is_followed_by_a_title_the_widget_lists(
    agent: Any, model: FakeResponses
) -> None:
    model.default = Script(text="We open at nine.", file_search=False)
    model.script_title(Script(text='"Opening hours on weekdays."\n'))
    client, _ = await agent()
    question = "When do you open on weekdays? " + "Please tell me everything. " * 100
    events = await events_of(await chat(client, create(question)))
    assert text_of(events) == "We open at nine."
    kinds = [e["type"] for e in events]
    # After the answer's last event: the title is a thread update, quotes and period gone.
    assert kinds.index("thread.updated") > max(
        i for i, k in enumerate(kinds) if k == "thread.item.done"
    )
    assert updated_titles(events) == ["Opening hours on weekdays"]
    assert "error" not in kinds
    thread = thread_id_of(events)
    assert (await listed(client))[thread] == "Opening hours on weekdays"

    (call,) = model.title_requests
    assert call.model == "gpt-6.1-terra"  # the route's model
    assert call.instructions == titles.INSTRUCTIONS
    assert call.body["max_output_tokens"] == titles.MAX_OUTPUT_TOKENS
    assert call.body.get("tools") in (None, [])
    sent = " ".join(p["text"] for p in call.content_parts("input_text"))
    assert sent.startswith("When do you open on weekdays?")
    assert len(sent) <= titles.INPUT_CHARS  # the first message, capped
    assert len(model.requests) == 1  # the turn's own call, unchanged

    later = await events_of(await chat(client, add(thread, "And on Sundays?")))
    assert text_of(later) == "We open at nine."
    assert updated_titles(later) == []
    assert len(model.title_requests) == 1  # one title per thread


async def test_titles_model_and_titles_false(
    agent: Any, model: FakeResponses, tmp_path: Path
) -> None:
    model.default = Script(text="Fine.", file_search=False)
    model.models.add("gpt-6.1-terra-nano")
    client, _ = await agent(titles={"model": "gpt-6.1-terra-nano"})
    await events_of(await chat(client, create("Where is the station?")))
    assert [r.model for r in model.title_requests] == ["gpt-6.1-terra-nano"]

    model.reset()
    off, _ = await agent(titles=False, store=f"sqlite:///{tmp_path / 'off.db'}")
    events = await events_of(await chat(off, create("Where is the station?")))
    assert text_of(events) == "Fine."
    assert updated_titles(events) == []
    assert model.title_requests == []
    assert set((await listed(off)).values()) == {None}


@pytest.mark.parametrize("failure", ["http_500", "retired_without_fallback"])
async def test_a_failed_title_call_leaves_the_answer_whole(
    agent: Any, model: FakeResponses, caplog: pytest.LogCaptureFixture, failure: str
) -> None:
    model.default = Script(text="The answer stands.", file_search=False)
    if failure == "http_500":
        model.script_title(Script(status=500, fail_times=None))
        client, metrics = await agent()
    else:
        model.models.retire("gpt-4.1-gone")
        client, metrics = await agent(titles={"model": "gpt-4.1-gone"})
    with caplog.at_level(logging.WARNING, logger="gateway.agent"):
        events = await events_of(await chat(client, create("Tell me the answer")))
    assert text_of(events) == "The answer stands."
    assert [e for e in events if e["type"] == "error"] == []
    assert updated_titles(events) == []
    assert set((await listed(client)).values()) == {None}
    assert len(model.title_requests) >= 1
    assert any("title call failed" in r.getMessage() for r in caplog.records)
    assert "Internal Server Error" not in caplog.text  # the upstream's words stay out
    ok = sample(metrics, "chatkit_gateway_upstream_requests_total", route="assistant", outcome="ok")
    assert ok == 1  # the turn's call; a title is not a turn


async def test_fallback_models_serve_the_title_too(agent: Any, model: FakeResponses) -> None:
    model.default = Script(text="Fine.", file_search=False)
    model.models.retire("gpt-4.1-gone")
    model.models.add("gpt-6.1-terra-nano")
    client, _ = await agent(
        agent={"model": "gpt-6.1-terra", "fallback_models": ["gpt-6.1-terra-nano"]},
        titles={"model": "gpt-4.1-gone"},
    )
    events = await events_of(await chat(client, create("Where is the station?")))
    assert updated_titles(events) == ["A fake title"]
    assert [r.model for r in model.title_requests] == ["gpt-4.1-gone", "gpt-6.1-terra-nano"]


async def test_a_title_is_counted_in_token_metrics_and_budgets(
    agent: Any, model: FakeResponses
) -> None:
    model.default = Script(text="Nine.", file_search=False, input_tokens=11, output_tokens=3)
    model.script_title(Script(text="Hours", input_tokens=50, output_tokens=4))
    client, metrics = await agent(token_budgets=[{"key": "user", "tokens": 60, "per": "1d"}])
    events = await events_of(await chat(client, create("When do you open?")))
    assert updated_titles(events) == ["Hours"]
    assert sample(metrics, TOKENS, route="assistant", direction="input") == 61
    assert sample(metrics, TOKENS, route="assistant", direction="output") == 7
    # The turn (14 tokens) alone would leave room; with its title (54) the day's 60 are spent.
    refused = await chat(client, add(thread_id_of(events), "And Sundays?"))
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "rate_limited"


async def test_the_stub_titles_offline(agent: Any) -> None:
    client, metrics = await agent(stub=True)
    events = await events_of(await chat(client, create("How do I reset my password, please?")))
    assert updated_titles(events) == ["How do I reset my password"]
    assert (await listed(client))[thread_id_of(events)] == "How do I reset my password"
    assert sample(metrics, TOKENS, route="assistant", direction="output") > 0


def test_the_model_watch_asks_about_the_title_model(tmp_path: Path) -> None:
    from gateway.agent.model_watch import watched_models
    from tests.support.agent_client import agent_policy

    url = f"sqlite:///{tmp_path / 'threads.db'}"
    agent = {"model": "gpt-6.1-terra", "fallback_models": ["gpt-6.1-terra-nano"]}
    named = agent_policy(url, agent=agent, titles={"model": "gpt-5-title"})
    assert watched_models(named) == {
        "assistant": ("gpt-6.1-terra", "gpt-6.1-terra-nano", "gpt-5-title")
    }
    assert watched_models(agent_policy(url, agent=agent)) == {
        "assistant": ("gpt-6.1-terra", "gpt-6.1-terra-nano")  # titles by the route's own models
    }
    assert watched_models(agent_policy(url, titles=False))["assistant"] == ("gpt-6.1-terra",)
