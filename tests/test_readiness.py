"""/readyz asks the subsystems' own checks (gateway/readiness.py): the agent runtime adds
its thread stores' while it runs, and the `server.ops_port` listener asks the same list."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.routes.ops import ops_app
from tests.support.agent_client import agent_policy, sqlite_url
from tests.support.processes import free_port


async def _readyz(store_url: str, ops: bool) -> tuple[int, Any]:
    """/readyz of the public port, or (ops) of the `server.ops_port` listener's app."""
    sections = {"server": {"ops_port": free_port()}} if ops else None
    main = create_app(agent_policy(store_url, sections=sections))
    async with TestClient(TestServer(main)) as public:  # main started: its runtime runs
        if not ops:
            resp = await public.get("/readyz")
            return resp.status, await resp.json()
        async with TestClient(TestServer(ops_app(main))) as probes:
            resp = await probes.get("/readyz")
            return resp.status, await resp.json()


async def test_readyz_on_either_port_says_when_the_thread_store_is_down() -> None:
    nowhere = f"postgresql://gateway:pw@127.0.0.1:{free_port()}/threads"
    for ops in (False, True):
        assert await _readyz(nowhere, ops) == (503, {"status": "thread store down"})


async def test_readyz_on_either_port_is_ok_with_the_store_up(tmp_path: Path) -> None:
    for ops in (False, True):
        assert await _readyz(sqlite_url(tmp_path), ops) == (200, {"status": "ok"})
