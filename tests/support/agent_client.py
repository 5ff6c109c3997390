"""A ChatKit client as the widget speaks it, for tests of `chatkit_agent` routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.metrics import Metrics
from tests.conftest import ALLOWED, make_policy

Client = TestClient[web.Request, web.Application]

DEVICE_A = "device-aaaaaaaaaaaaaaaa"
DEVICE_B = "device-bbbbbbbbbbbbbbbb"
PATH = "/chatkit/assistant"


def agent_route(store_url: str, **overrides: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": "assistant",
        "path": PATH,
        "kind": "chatkit_agent",
        "allowed_origins": [ALLOWED],
        "agent": {
            "model": "gpt-6.1-terra",
            "instructions": "You answer questions about example.org.",
            "tools": [{"type": "file_search", "vector_store_ids": ["vs_abc123"]}],
        },
        "store": {"url": store_url},
    }
    return {**route, **overrides}


def agent_policy(
    store_url: str,
    *,
    base_url: str = "http://127.0.0.1:9/v1",
    stub: bool = False,
    sections: dict[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """A policy with one agent route; `sections` override top-level keys (e.g. limiter)."""
    return make_policy(
        routes=[agent_route(store_url, **overrides)], base_url=base_url, stub=stub,
        **(sections or {}),
    )  # fmt: skip


def sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'threads.db'}"


def headers(device: str | None = DEVICE_A, origin: str = ALLOWED) -> dict[str, str]:
    out = {"Origin": origin, "Content-Type": "application/json"}
    if device is not None:
        out["X-Device-Id"] = device
    return out


def user_input(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    return {
        "content": [{"type": "input_text", "text": text}],
        "attachments": attachments or [],
        "inference_options": {},
    }


def create(text: str, attachments: list[str] | None = None) -> dict[str, Any]:
    return {"type": "threads.create", "params": {"input": user_input(text, attachments)}}


def add(thread_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "threads.add_user_message",
        "params": {"thread_id": thread_id, "input": user_input(text)},
    }


async def sse_events(resp: Any) -> AsyncIterator[dict[str, Any]]:
    """The `data:` events of an SSE answer (aiohttp ClientResponse), as they arrive."""
    async for raw in resp.content:
        line = raw.decode().strip()
        if line.startswith("data: "):
            yield json.loads(line[6:])


async def events_of(resp: Any) -> list[dict[str, Any]]:
    return [e async for e in sse_events(resp)]


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["update"]["delta"]
        for e in events
        if e["type"] == "thread.item.updated"
        and e["update"]["type"] == "assistant_message.content_part.text_delta"
    )


def thread_id_of(events: list[dict[str, Any]]) -> str:
    (created,) = [e for e in events if e["type"] == "thread.created"]
    return str(created["thread"]["id"])


async def chat(client: Any, body: dict[str, Any], device: str | None = DEVICE_A) -> Any:
    """POST one ChatKit request with the test client (aiohttp TestClient or ClientSession)."""
    return await client.post(PATH, data=json.dumps(body), headers=headers(device))


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0
