"""Token budgets on a `chatkit_agent` route (issue 20, items 3 and 5), as a visitor sees them:
429 and its `Retry-After`, from which the tokens spent follow exactly (a day's budget of
`tokens` drains one token per `86400 / tokens` seconds).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.metrics import Metrics
from tests.support.agent_client import (
    DEVICE_A,
    DEVICE_B,
    chat,
    create,
    events_of,
    sample,
    sse_events,
)
from tests.support.fake_responses import FakeResponses, Script

DAY = 86400.0


def charged(retry_after: str, tokens: int, per: float = DAY) -> float:
    """Tokens in a full budget's bucket, from the Retry-After of its 429."""
    interval = per / tokens
    return (int(retry_after) + per - interval) / interval


async def no_open_streams(metrics: Metrics) -> None:
    """The turn's settlement runs with the stream's close, in the same cleanup."""
    for _ in range(250):
        if sample(metrics, "chatkit_gateway_open_streams", route="assistant") == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the stream did not close")


async def test_a_turn_openai_refuses_is_charged_nothing(agent: Any, model: FakeResponses) -> None:
    model.script(Script(status=400, error_message="Invalid file"))
    model.default = Script(text="ok", input_tokens=10, output_tokens=10)
    client, metrics = await agent(token_budgets=[{"key": "global", "tokens": 100, "per": "1d"}])
    refused = await chat(client, create("word " * 400))  # about 500 tokens, estimated
    assert refused.status == 200
    events = await events_of(refused)
    assert [e["type"] for e in events].count("error") == 1
    await no_open_streams(metrics)
    other = await chat(client, create("hello"), device=DEVICE_B)
    assert other.status == 200  # before: 429 for most of a day, for nobody's spend
    await events_of(other)
    third = await chat(client, create("again"), device=DEVICE_B)
    assert third.status == 200  # charged what OpenAI reported: 20 of 100


async def test_a_turn_is_charged_the_usage_openai_reports(agent: Any, model: FakeResponses) -> None:
    model.default = Script(text="ok", input_tokens=550, output_tokens=50)
    client, _ = await agent(token_budgets=[{"key": "global", "tokens": 1000, "per": "1d"}])
    for device in (DEVICE_A, DEVICE_B):  # 600, then 1200 of 1000 (room was left)
        await events_of(await chat(client, create("short " * 300), device=device))
    refused = await chat(client, create("one more"))
    assert refused.status == 429
    assert charged(refused.headers["Retry-After"], 1000) == pytest.approx(1200, abs=1)


async def test_parallel_turns_see_each_others_reservations(
    agent: Any, model: FakeResponses
) -> None:
    held = Script(text="a long answer", hang_after=1)
    model.script(held, held)
    client, metrics = await agent(token_budgets=[{"key": "global", "tokens": 1000, "per": "1d"}])
    question = "word " * 500  # about 650 tokens, estimated
    first = await chat(client, create(question))
    await model.wait_for_requests(1)
    second = await chat(client, create(question), device=DEVICE_B)  # 650 < 1000: room
    await model.wait_for_requests(2)
    third = await chat(client, create(question), device="c" * 16)
    assert third.status == 429  # before: admitted, as nothing was charged yet
    assert len(model.requests) == 2
    for resp in (first, second):
        async for event in sse_events(resp):
            if event["type"] == "thread.item.updated":
                break
        resp.close()  # the visitors leave: charged their estimates, as reserved
    await asyncio.wait_for(model.disconnected.wait(), 5)
    await no_open_streams(metrics)
    after = await chat(client, create("and now?"), device="c" * 16)
    assert after.status == 429
    spent = charged(after.headers["Retry-After"], 1000)
    one_turn = spent / 2
    assert 1000 < spent <= 1000 + one_turn  # overshot by one turn's size, no more
