"""What a request says of its public URL is decided once, at the edge (request_context.py),
and every reader agrees: the scheme a proxy route forwards to its backend and the upload
URL an agent route hands the widget come from the same decision."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from yarl import URL

from tests.conftest import ALLOWED
from tests.support.agent_client import DEVICE_A, PATH
from tests.support.chatkit_backend import Backend, running_backend
from tests.test_agent_store import attachment_create

TRUSTED = {"trusted_proxies": ["127.0.0.1/32"]}
LIST_REQ = {"type": "threads.list", "params": {}}
# A chain of proxies, the one nearest the visitor first (each appends what it saw).
CHAIN = {"X-Forwarded-Proto": "HTTPS, http", "X-Forwarded-Host": "chat.example.org, lb.internal"}


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    async with running_backend() as server:
        yield server


async def _forwarded_proto(gateway: Any, backend: Backend, server: Any, sent: Any) -> str:
    route = {
        "name": "chat",
        "path": "/chatkit",
        "kind": "chatkit_proxy",
        "target": backend.url + "/chatkit",
        "allowed_origins": [ALLOWED],
    }
    client = await gateway(routes=[route], server=server)
    resp = await client.post("/chatkit", json=LIST_REQ, headers={"Origin": ALLOWED, **sent})
    assert resp.status == 200
    seen = {k.lower(): v for k, v in backend.seen[-1].headers.items()}
    return seen["x-forwarded-proto"]


async def _upload_url(agent: Any, server: Any, sent: Any) -> URL:
    client, _ = await agent(attachments={}, sections={"server": server})
    headers = {"Origin": ALLOWED, "X-Device-Id": DEVICE_A, **sent}
    body = json.dumps(attachment_create("x.png", 10, "image/png"))
    made = await client.post(PATH, data=body, headers=headers)
    assert made.status == 200, await made.text()
    return URL((await made.json())["upload_descriptor"]["url"])


@pytest.mark.parametrize(
    ("server", "sent", "scheme", "host"),
    [
        (TRUSTED, CHAIN, "https", "chat.example.org"),  # the hop nearest the visitor
        (TRUSTED, {"X-Forwarded-Proto": "javascript"}, "http", None),  # not a scheme
        ({}, CHAIN, "http", None),  # an untrusted peer's claims are nobody's
    ],
)
async def test_one_public_scheme_for_the_backend_and_the_upload_url(
    gateway: Any,
    backend: Backend,
    agent: Any,
    server: Any,
    sent: Any,
    scheme: str,
    host: str | None,
) -> None:
    assert await _forwarded_proto(gateway, backend, server, sent) == scheme
    url = await _upload_url(agent, server, sent)
    assert url.scheme == scheme
    assert url.host == (host or "127.0.0.1")  # else the Host the client connected to
