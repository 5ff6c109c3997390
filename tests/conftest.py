"""Shared fixtures: a policy builder, the fake OpenAI, and a gateway in front of it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.logs import JsonFormatter
from gateway.metrics import Metrics
from gateway.policy import Policy, parse_policy
from tests.support.fake_openai import FakeOpenAI
from tests.support.fake_responses import FakeResponses

ALLOWED = "https://example.org"
TEST_KEY = "sk-test-fake-0123456789abcdef"


def site_route(*limits: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """The `site` chatkit_session route of most tests; `limits` replace its rate limits."""
    route: dict[str, Any] = {
        "name": "site",
        "path": "/api/chatkit/session",
        "kind": "chatkit_session",
        "workflow_id": "wf_test",
        "allowed_origins": [ALLOWED],
        "rate_limits": list(limits) or [{"key": "client_ip", "requests": 100, "per": "1h"}],
    }
    return {**route, **overrides}


def policy_yaml(
    *,
    base_url: str = "http://127.0.0.1:9/v1",
    routes: list[dict[str, Any]] | None = None,
    **sections: Any,
) -> str:
    """A complete policy as YAML text; sections and routes override the defaults."""
    doc: dict[str, Any] = {
        "server": {"trusted_proxies": []},
        "upstream": {
            "base_url": base_url,
            "api_key": "${OPENAI_API_KEY}",
            "timeout_seconds": 2,
            "retries": 2,
            "max_rate": None,
        },
        "limiter": {"backend": "memory"},
        "routes": routes
        if routes is not None
        else [
            site_route(session={"expires_after_seconds": 600, "max_requests_per_1_minute": 10}),
            {
                "name": "voice",
                "path": "/api/realtime/secret",
                "kind": "realtime_client_secret",
                "allowed_origins": [ALLOWED],
                "rate_limits": [{"key": "client_ip", "requests": 20, "per": "1h"}],
                "realtime": {
                    "expires_after_seconds": 600,
                    "session": {"type": "realtime", "model": "gpt-realtime"},
                },
            },
        ],
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(name), dict):
            doc[name] = {**doc[name], **value}
        else:
            doc[name] = value
    return yaml.safe_dump(doc, sort_keys=False)


def make_policy(text: str | None = None, *, stub: bool = False, **kw: Any) -> Policy:
    return parse_policy(
        text or policy_yaml(**kw), env={"OPENAI_API_KEY": TEST_KEY}, stub_upstream=stub
    )


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key=TEST_KEY)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


GatewayFactory = Callable[..., "Any"]


@pytest.fixture
async def gateway(
    fake_openai: FakeOpenAI,
) -> AsyncIterator[Callable[..., Any]]:
    """`await gateway(**policy_yaml_kwargs)` → a TestClient for a gateway in front of the fake."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        *, policy: Policy | None = None, metrics: Metrics | None = None, **kw: Any
    ) -> TestClient[web.Request, web.Application]:
        kw.setdefault("base_url", fake_openai.base_url)
        app = create_app(policy or make_policy(**kw), metrics=metrics)
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


class LogCapture(logging.Handler):
    """Every record formatted exactly as the gateway prints it."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_logs() -> Any:
    handler = LogCapture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


@pytest.fixture
async def gateways() -> AsyncIterator[list[Any]]:
    """Every `serve` process a test starts (tests/support/processes.py) is killed afterwards."""
    started: list[Any] = []
    try:
        yield started
    finally:
        for process in started:
            await process.kill()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


# chatkit_agent routes (tests/support/agent_client.py has the client side)
@pytest.fixture
async def model() -> AsyncIterator[FakeResponses]:
    async with FakeResponses(api_key=TEST_KEY) as fake:
        yield fake


@pytest.fixture
async def agent(model: FakeResponses, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """`await agent(**route_overrides)` → (TestClient, Metrics): one agent route, fake model."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        *, stub: bool = False, store: str | None = None, sections: Any = None, **overrides: Any
    ) -> tuple[TestClient[web.Request, web.Application], Metrics]:
        from tests.support.agent_client import agent_policy  # it imports this module

        metrics = Metrics()
        url = store or f"sqlite:///{tmp_path / 'threads.db'}"
        policy = agent_policy(
            url, base_url=model.base_url, stub=stub, sections=sections, **overrides
        )
        client: TestClient[web.Request, web.Application] = TestClient(
            TestServer(create_app(policy, metrics=metrics))
        )
        await client.start_server()
        clients.append(client)
        return client, metrics

    yield start
    for client in clients:
        await client.close()
