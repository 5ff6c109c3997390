"""`agent.fallback_models` (SPEC §10): a model that is gone hands the turn to the next one.

A real gateway app serves the `chatkit_agent` route over HTTP in front of the fake Responses
API, which refuses retired models with OpenAI's `model_not_found` (400 from /responses, or
404) before any event. The visitor sees one normal answer; each refusal is counted, and
logged once per model per process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.policy import PolicyError
from tests.conftest import TEST_KEY
from tests.support.agent_client import add as add_message
from tests.support.agent_client import (
    agent_policy,
    chat,
    create,
    events_of,
    sample,
    text_of,
    thread_id_of,
)
from tests.support.fake_responses import FakeResponses, Script

ROUTE = "assistant"
OUTCOMES = "chatkit_gateway_upstream_requests_total"
FALLBACK_LOG = "the upstream does not serve model"


def agent_block(model: str, *fallbacks: str) -> dict[str, Any]:
    return {"model": model, "fallback_models": list(fallbacks), "instructions": "Be brief."}


def turns(model: FakeResponses) -> list[Any]:
    """The streamed requests: the turns' calls (a thread's title call is not streamed)."""
    return [r for r in model.requests if r.stream]


def refusals(model: FakeResponses) -> int:
    return sum(r.outcome in ("http_400", "http_404") for r in model.requests)


def warnings_about(json_logs: Any, model: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in json_logs.lines]
    return [
        r
        for r in records
        if r["level"] == "warning" and r["message"].startswith(f"{FALLBACK_LOG} {model} ")
    ]


@pytest.mark.parametrize("status", [400, 404])
async def test_a_retired_model_hands_the_turn_to_the_fallback(
    agent: Any, model: FakeResponses, json_logs: Any, status: int
) -> None:
    model.models.gone_status = status
    model.models.retire("gpt-4.1-sunset")
    model.default = Script(text="We open at nine.")
    client, metrics = await agent(agent=agent_block("gpt-4.1-sunset", "gpt-6.1-terra"))

    resp = await chat(client, create("When do you open?"))
    assert resp.status == 200
    events = await events_of(resp)
    assert text_of(events) == "We open at nine."
    assert not [e for e in events if e["type"] == "error"]
    sent = turns(model)
    assert [r.model for r in sent] == ["gpt-4.1-sunset", "gpt-6.1-terra"]
    assert [r.outcome for r in sent] == [f"http_{status}", "completed"]
    assert sent[0].body == {**sent[1].body, "model": "gpt-4.1-sunset"}  # the same turn

    thread = thread_id_of(events)
    events = await events_of(await chat(client, add_message(thread, "And close?")))
    assert text_of(events) == "We open at nine."
    assert [r.model for r in turns(model)][2:] == ["gpt-4.1-sunset", "gpt-6.1-terra"]

    labels = {"route": ROUTE}
    refused = refusals(model)  # the turns', and a title call's if it went to the gone model
    assert refused >= 2
    assert sample(metrics, OUTCOMES, **labels, outcome="model_not_found") == refused
    assert sample(metrics, OUTCOMES, **labels, outcome="ok") >= 2
    assert sample(metrics, OUTCOMES, **labels, outcome="client_error") == 0
    (warning,) = warnings_about(json_logs, "gpt-4.1-sunset")  # once, for two refusals
    assert "route assistant" in warning["message"] and "gpt-6.1-terra" in warning["message"]
    assert TEST_KEY not in "\n".join(json_logs.lines)


async def test_fallbacks_are_tried_in_order(
    agent: Any, model: FakeResponses, json_logs: Any
) -> None:
    for gone in ("gpt-4.1-sunset", "gpt-4.1-dusk"):
        model.models.retire(gone)
    model.script(Script(text="From the third model."))
    client, metrics = await agent(
        agent=agent_block("gpt-4.1-sunset", "gpt-4.1-dusk", "gpt-6.1-terra", "gpt-6.1-terra-mini")
    )
    events = await events_of(await chat(client, create("hi")))
    assert text_of(events) == "From the third model."
    assert [r.model for r in turns(model)] == ["gpt-4.1-sunset", "gpt-4.1-dusk", "gpt-6.1-terra"]
    refused = refusals(model)
    assert refused >= 2
    assert sample(metrics, OUTCOMES, route=ROUTE, outcome="model_not_found") == refused
    assert len(warnings_about(json_logs, "gpt-4.1-sunset")) == 1
    assert len(warnings_about(json_logs, "gpt-4.1-dusk")) == 1


async def test_every_model_gone_is_one_generic_error_each_refusal_counted(
    agent: Any, model: FakeResponses
) -> None:
    for gone in ("gpt-4.1-sunset", "gpt-4.1-dusk"):
        model.models.retire(gone)
    client, metrics = await agent(agent=agent_block("gpt-4.1-sunset", "gpt-4.1-dusk"))
    resp = await chat(client, create("hi"))
    raw = await resp.text()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    assert len([e for e in events if e["type"] == "error"]) == 1
    assert "does not exist" not in raw and "gpt-4.1" not in raw  # never the upstream's words
    assert [r.model for r in turns(model)] == ["gpt-4.1-sunset", "gpt-4.1-dusk"]
    assert sample(metrics, OUTCOMES, route=ROUTE, outcome="model_not_found") == refusals(model)
    assert sample(metrics, OUTCOMES, route=ROUTE, outcome="client_error") == 0


async def test_without_fallbacks_a_gone_model_is_counted_as_such(
    agent: Any, model: FakeResponses
) -> None:
    model.models.retire("gpt-4.1-sunset")
    client, metrics = await agent(agent=agent_block("gpt-4.1-sunset"))
    events = await events_of(await chat(client, create("hi")))
    assert [e["type"] for e in events if e["type"] == "error"] == ["error"]
    assert len(turns(model)) == 1
    assert sample(metrics, OUTCOMES, route=ROUTE, outcome="model_not_found") == refusals(model)


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_other_refusals_do_not_fall_back(
    agent: Any, model: FakeResponses, status: int
) -> None:
    model.default = Script(status=status, fail_times=None)
    client, metrics = await agent(agent=agent_block("gpt-6.1-terra", "gpt-6.1-terra-mini"))
    events = await events_of(await chat(client, create("hi")))
    assert [e["type"] for e in events if e["type"] == "error"] == ["error"]
    assert {r.model for r in turns(model)} == {"gpt-6.1-terra"}  # the SDK may retry a 5xx
    assert sample(metrics, OUTCOMES, route=ROUTE, outcome="model_not_found") == 0


def test_fallback_models_are_checked_at_load(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'threads.db'}"
    policy = agent_policy(url, agent=agent_block("gpt-6.1-terra", "gpt-6.1-terra-mini"))
    assert policy.routes[0].agent.fallback_models == ("gpt-6.1-terra-mini",)
    for fallbacks, wanted in [
        (["gpt-6.1-terra"], "routes[0].agent.fallback_models[0]: 'gpt-6.1-terra' is already"),
        (["a", "b", "c", "d", "e"], "routes[0].agent.fallback_models: "),
        (["two words"], "routes[0].agent.fallback_models[0]: expected a model name"),
    ]:
        with pytest.raises(PolicyError) as caught:
            agent_policy(url, agent=agent_block("gpt-6.1-terra", *fallbacks))
        assert wanted in str(caught.value), str(caught.value)
