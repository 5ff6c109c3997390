"""An interrupted turn with attachments is charged what the model could have been sent
(issue 20, item 3): the attachment bytes the converter sent after the per-turn cap, not
json.dumps of inline base64 repeated per mention."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.agent_client import (
    DEVICE_B,
    chat,
    create,
    events_of,
    sse_events,
    thread_id_of,
    user_input,
)
from tests.support.fake_responses import FakeResponses, Script
from tests.test_agent_store import upload
from tests.test_budgets_route import charged, no_open_streams


async def test_an_interrupted_turn_is_charged_what_could_have_been_sent(
    agent: Any, model: FakeResponses
) -> None:
    size = 256 * 1024
    model.default = Script(text="ok", input_tokens=1, output_tokens=1)
    client, metrics = await agent(
        attachments={"max_bytes": size, "max_bytes_per_turn": size, "mime_types": ["image/png"]},
        token_budgets=[{"key": "global", "tokens": 1000, "per": "1d"}],
    )
    png = b"\x89PNG\r\n\x1a\n" + bytes(size - 8)
    image = (await upload(client, "big.png", png, "image/png"))["id"]
    thread = thread_id_of(await events_of(await chat(client, create("look", [image]))))

    def again(text: str) -> dict[str, Any]:
        params = {"thread_id": thread, "input": user_input(text, [image])}
        return {"type": "threads.add_user_message", "params": params}

    await events_of(await chat(client, again("and again")))
    model.script(Script(text="a long answer", hang_after=1))
    held = await chat(client, again("once more"))
    async for event in sse_events(held):
        if event["type"] == "thread.item.updated":
            break
    held.close()
    await asyncio.wait_for(model.disconnected.wait(), 5)
    await no_open_streams(metrics)
    refused = await chat(client, create("hello"), device=DEVICE_B)
    assert refused.status == 429
    spent = charged(refused.headers["Retry-After"], 1000) - 4  # the two answered turns
    # The image went once, as stored (256 KiB, 65,536 tokens at 4 bytes each), plus the
    # text. Before: json.dumps of the inline base64 (87,500 tokens here; 262,000 when
    # each of the three mentions was inlined).
    assert size / 4 < spent < size / 4 + 1000
    assert json.dumps(model.requests[-1].input_items).count("base64,") == 1
